"""Records: the token windows shown to an explainer and used to score its explanation.

A *record* is one fixed-length context window (``ctx_len`` tokens after a BOS) with one unit's
activation at every token. For each unit we draw, from ``acts [n_windows, pos, n_units]``:

* **train** records (shown to the explainer): the top-activating windows, or -- with
  ``sampling="quantiles"`` (EleutherAI delphi) -- windows spread evenly over ``n_quantiles``
  quantile bins of the window maxima among activating windows;
* **test** records (used by the scorers): top-activating windows and random windows, 1:1 (the
  ratio is kept when a sparse unit has fewer activating windows than asked for), and -- with
  ``n_test_quantile > 0`` (delphi) -- activating windows drawn evenly from ``n_quantiles`` quantile
  bins of the window maxima (bin 0 the strongest), so that scorers also see mid-activation examples.
  Top and quantile test records are the *activating* (positive) records of detection, embedding and
  surprisal. Each quantile record carries its bin (``Record.quantile``).
* **negative** test records (delphi's definition): windows where the unit does **not** activate, i.e.
  every token sits at level 0 of the explainer's scale, ``a < negative_threshold * max_a``
  (``negative_threshold = 0.1``); drawn at random among them, as many as random records. A unit that
  activates somewhere in almost every window has too few: the rest are its weakest windows (lowest
  maxima), and :attr:`UnitRecords.n_negative_silent` counts how many negatives are truly silent.
  Detection, embedding, surprisal and intruder contrast the activating records with these; the
  correlation score keeps Bills et al.'s top + random records (a random window may well activate).

**Polarity.** A record stores the unit's **positive side**, ``max(a, 0)``: SAE latents are non-negative
already; an MLP neuron (a signed SwiGLU output) or a random direction is read on its positive side only,
so the explainer (which sees ``relu(a)`` levels) and every simulator are scored on the same numbers. The
negative side would be a unit of its own, not scored here.

Windows are picked by their maximum activation; a window index is used at most once per unit, so
train and test records never overlap. Windows are non-overlapping slices of held-out text.

Discretisation (Bills et al.): ``d = min(10, floor(10 * relu(a) / max_a))`` with ``max_a`` the unit's
largest activation over all harvested windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch

Sampling = Literal["top", "quantiles"]  # how train records are chosen
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
RecordKind = Literal["top", "quantile", "random", "negative"]  # how one record was picked
UnitKind = Literal["sae", "neuron", "random", "token", "planted"]  # which family a unit belongs to


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    n_train: int = 6  # records shown to the explainer
    n_test_top: int = 5  # top-activating test records (scored)
    n_test_random: int = 5  # random test records (scored); 1:1 with n_test_top by default
    sampling: Sampling = "top"  # "top" or "quantiles": how train records are chosen
    n_quantiles: int = 5  # quantile bins (train records with sampling="quantiles"; quantile test records)
    n_test_quantile: int = 0  # activating test records spread over the n_quantiles bins (0: none)
    negative_threshold: float = 0.1  # a negative record stays below this fraction of max_act at every token


@dataclasses.dataclass(frozen=True)
class Record:
    """One window of one unit: ``tokens [pos]`` ids, ``strings [pos]`` decoded, ``acts [pos]``."""

    window: int  # index of the window in the harvested set
    kind: RecordKind  # "top" | "quantile" | "random" | "negative"
    tokens: list[int]  # token ids (BOS removed)
    strings: list[str]  # token strings, as the tokenizer decodes each one
    acts: list[float]  # the unit's activation at each token
    quantile: int | None = None  # quantile bin of a quantile record (0: strongest), else None

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class UnitRecords:
    """Everything about one unit that the explainers and scorers need."""

    unit: str  # e.g. "neuron/812", "sae/77", "random/3"
    kind: UnitKind  # "sae" | "neuron" | "random" | "token"
    max_act: float  # largest activation over all harvested windows (for discretisation)
    train: list[Record]  # shown to the explainer
    test_top: list[Record]  # top-activating, scored
    test_random: list[Record]  # random, scored
    test_quantile: list[Record] = dataclasses.field(default_factory=list)  # activating, across quantiles
    test_negative: list[Record] = dataclasses.field(default_factory=list)  # non-activating (delphi), scored

    @property
    def negatives(self) -> list[Record]:
        """The negatives of the contrast scorers: :attr:`test_negative` (records without them: the random ones)."""
        return list(self.test_negative) if self.test_negative else list(self.test_random)

    @property
    def contrast(self) -> list[Record]:
        """Activating records then non-activating ones: top, quantile, negative (detection, embedding,
        surprisal; the intruder's intruders are the negatives)."""
        return [*self.test_top, *self.test_quantile, *self.negatives]

    @property
    def contrast_labels(self) -> list[int]:
        """One label per record of :attr:`contrast`: 1 activating, 0 non-activating."""
        return [1] * (len(self.test_top) + len(self.test_quantile)) + [0] * len(self.negatives)

    @property
    def n_negative_silent(self) -> int:
        """How many negatives stay at level 0 of the 0-10 scale at every token (the rest: weakest windows)."""
        return sum(int(discretise(r.acts, self.max_act).max(initial=0) == 0) for r in self.test_negative)

    @property
    def test(self) -> list[Record]:
        """Every test record: the top ones, then the quantile ones, then the random ones."""
        return [*self.test_top, *self.test_quantile, *self.test_random]

    @property
    def test_labels(self) -> list[int]:
        """One label per record of :attr:`test`: 1 for an activating (top or quantile) record, 0 for a random one."""
        return [1] * (len(self.test_top) + len(self.test_quantile)) + [0] * len(self.test_random)

    def subset(self, n_top: int, n_quantile: int, n_random: int, generator: torch.Generator) -> UnitRecords:
        """The same unit with at most ``n_top`` / ``n_quantile`` / ``n_random`` test records of each kind,
        drawn at random (order kept); train records unchanged. The LM scorers' tier uses it."""

        def pick(recs: list[Record], n: int) -> list[Record]:
            if n >= len(recs):
                return list(recs)
            keep = sorted(torch.randperm(len(recs), generator=generator)[:n].tolist())
            return [recs[i] for i in keep]

        return dataclasses.replace(self, test_top=pick(self.test_top, n_top),
                                   test_quantile=pick(self.test_quantile, n_quantile),
                                   test_random=pick(self.test_random, n_random),
                                   test_negative=pick(self.test_negative, n_random))

    @property
    def alive(self) -> bool:
        return self.max_act > 0

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "kind": self.kind, "max_act": self.max_act,
                "train": [r.to_dict() for r in self.train], "test_top": [r.to_dict() for r in self.test_top],
                "test_random": [r.to_dict() for r in self.test_random],
                "test_quantile": [r.to_dict() for r in self.test_quantile],
                "test_negative": [r.to_dict() for r in self.test_negative]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitRecords:
        return cls(unit=d["unit"], kind=d["kind"], max_act=d["max_act"],
                   train=[Record.from_dict(r) for r in d["train"]],
                   test_top=[Record.from_dict(r) for r in d["test_top"]],
                   test_random=[Record.from_dict(r) for r in d["test_random"]],
                   test_quantile=[Record.from_dict(r) for r in d.get("test_quantile", [])],
                   test_negative=[Record.from_dict(r) for r in d.get("test_negative", [])])


def discretise(acts: np.ndarray | Sequence[float] | torch.Tensor, max_act: float) -> np.ndarray:
    """``min(10, floor(10 * relu(a) / max_a))`` as int64 (all zeros when ``max_a <= 0``)."""
    a = np.asarray(acts.detach().cpu() if isinstance(acts, torch.Tensor) else acts, dtype=np.float64)
    if max_act <= 0:
        return np.zeros(a.shape, dtype=np.int64)
    return np.minimum(10, np.floor(10.0 * np.maximum(a, 0.0) / max_act)).astype(np.int64)


def escape_token(s: str) -> str:
    """A token shown on one line: newline, tab and carriage return written as ``\\n``, ``\\t``, ``\\r``.

    The one escaping rule of the explainer's records and the simulator's token display.
    """
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Decode each id on its own (byte-level pieces that are not valid UTF-8 show as U+FFFD)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def _record(window: int, kind: RecordKind, tokens: torch.Tensor, acts: torch.Tensor, tokenizer: Any,
            skip_first: bool, quantile: int | None = None) -> Record:
    t = tokens[1:] if skip_first else tokens
    a = (acts[1:] if skip_first else acts).clamp(min=0)  # the unit's positive side (module docstring)
    ids = [int(i) for i in t]
    return Record(window, kind, ids, token_strings(tokenizer, ids), [float(x) for x in a], quantile)


def quantile_picks(ranked: Sequence[int], n_bins: int, n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``n`` items of ``ranked`` (strongest first) spread evenly over ``n_bins`` equal-count bins:
    ``[(item, bin)]``, bin 0 the strongest, items drawn at random inside each bin (bins in order)."""
    if not ranked or n <= 0:
        return []
    bins = np.array_split(np.asarray(ranked), max(1, min(n_bins, len(ranked))))
    per_bin = [n // len(bins) + (1 if b < n % len(bins) else 0) for b in range(len(bins))]
    out: list[tuple[int, int]] = []
    for b, (items, k) in enumerate(zip(bins, per_bin)):
        for i in torch.randperm(len(items), generator=generator)[:k].tolist():
            out.append((int(items[i]), b))
    return out


def build_unit_records(
    unit: str,
    kind: str,
    acts: torch.Tensor,
    windows: torch.Tensor,
    tokenizer: Any,
    cfg: RecordConfig,
    generator: torch.Generator,
    skip_first: bool = True,
) -> UnitRecords:
    """Records of one unit from ``acts [n_windows, pos]`` over ``windows [n_windows, pos]``.

    The top ``n_train + n_test_top`` windows (by maximum activation) are dealt alternately to train
    and test, so both get strong examples; with ``sampling="quantiles"`` the train records instead
    come from quantile bins of the remaining activating windows. Random test records are drawn
    uniformly from windows not used yet; negative test records at random among the unused windows
    whose maximum stays below ``negative_threshold * max_act`` (then the weakest unused windows).
    ``skip_first`` drops position 0 (BOS) from every record; records store ``max(a, 0)``.
    """
    if cfg.sampling not in SAMPLINGS:
        raise ValueError(f"sampling={cfg.sampling!r}; valid values: {', '.join(SAMPLINGS)}")
    a = acts[:, 1:] if skip_first else acts
    win_max = a.max(dim=1).values  # [n_windows]
    max_act = float(win_max.max()) if win_max.numel() else 0.0
    order = torch.argsort(win_max, descending=True, stable=True)
    used: set[int] = set()
    train_idx: list[int] = []
    test_top_idx: list[int] = []
    if cfg.sampling == "top":
        pool = [int(i) for i in order[: cfg.n_train + cfg.n_test_top] if win_max[i] > 0]
        for j, w in enumerate(pool):  # deal alternately: train, test, train, test...
            if (j % 2 == 0 and len(train_idx) < cfg.n_train) or len(test_top_idx) >= cfg.n_test_top:
                train_idx.append(w)
            else:
                test_top_idx.append(w)
    else:
        test_top_idx = [int(i) for i in order[: cfg.n_test_top] if win_max[i] > 0]
        rest = [int(i) for i in order[cfg.n_test_top:] if win_max[i] > 0]
        if rest:
            bins = np.array_split(np.array(rest), max(1, min(cfg.n_quantiles, len(rest))))
            per_bin = int(np.ceil(cfg.n_train / len(bins)))
            for b in bins:
                pick = torch.randperm(len(b), generator=generator)[:per_bin]
                train_idx.extend(int(b[i]) for i in pick)
            train_idx = train_idx[: cfg.n_train]
    used.update(train_idx)
    used.update(test_top_idx)
    # quantile test records: activating windows not used yet, spread over quantile bins of their maxima
    quant = quantile_picks([int(i) for i in order if win_max[i] > 0 and int(i) not in used], cfg.n_quantiles,
                           cfg.n_test_quantile, generator)
    used.update(i for i, _ in quant)
    free = [i for i in torch.randperm(windows.shape[0], generator=generator).tolist() if i not in used]
    # keep the top:random ratio even when fewer activating windows exist than asked for
    n_random = cfg.n_test_random
    if len(test_top_idx) < cfg.n_test_top:
        n_random = round(len(test_top_idx) * cfg.n_test_random / max(cfg.n_test_top, 1))
    random_idx = free[:n_random]
    rest = [i for i in free[n_random:]]
    silent = [i for i in rest if win_max[i] < cfg.negative_threshold * max_act]
    if len(silent) < n_random:  # too few silent windows: the weakest of the others
        others = sorted((i for i in rest if win_max[i] >= cfg.negative_threshold * max_act), key=lambda i: float(win_max[i]))
        silent += others[: n_random - len(silent)]
    negative_idx = silent[:n_random]
    train_kind = "top" if cfg.sampling == "top" else "quantile"

    def recs(idx: list[int], k: str) -> list[Record]:
        return [_record(i, k, windows[i], acts[i], tokenizer, skip_first) for i in idx]

    return UnitRecords(unit=unit, kind=kind, max_act=max_act, train=recs(train_idx, train_kind),
                       test_top=recs(test_top_idx, "top"), test_random=recs(random_idx, "random"),
                       test_quantile=[_record(i, "quantile", windows[i], acts[i], tokenizer, skip_first, b)
                                      for i, b in quant],
                       test_negative=recs(negative_idx, "negative"))


def build_records(
    source_names: Sequence[str],
    kind: str,
    acts: torch.Tensor,
    windows: torch.Tensor,
    tokenizer: Any,
    cfg: RecordConfig,
    generator: torch.Generator,
) -> list[UnitRecords]:
    """:func:`build_unit_records` for every unit of ``acts [n_windows, pos, n_units]``."""
    return [build_unit_records(name, kind, acts[:, :, j], windows, tokenizer, cfg, generator)
            for j, name in enumerate(source_names)]
