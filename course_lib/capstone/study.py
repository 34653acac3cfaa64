"""One matched pair, end to end: harvest, the SAE, the unit sets, their records and activation statistics.

For a :class:`~course_lib.capstone.matching.MatchedPair` (dense model ``d``, sparse model ``s``) and three
disjoint sets of windows of 02's corpus (``train``: the SAE's data; ``select``: units chosen, polarity fixed,
explainer's records; ``score``: every scored record and every activation statistic)::

    dense neuron, dense channel, dense random    <- d's last-block sites
    sparse neuron, sparse channel, sparse random <- s's last-block sites
    sae latent                                   <- TopK SAE on d's channels (trained on ``train``)

each class with ``n_units`` units drawn at random among the alive ones. The records are then explained and scored
by :func:`course_lib.capstone.explain.score_units` (in the notebook, with the learner's k-token explanation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from course_lib import cache
from course_lib.autointerp.records import RecordConfig, UnitRecords
from course_lib.capstone import activity, dictionary, explain, units
from course_lib.capstone.matching import MatchedPair
from course_lib.circuits import SparseTransformer


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    n_units: int = 24  # units per class and model
    rec: RecordConfig = RecordConfig(n_train=6, n_test_top=5, n_test_random=5, n_test_quantile=5)  # per unit
    sae: dictionary.DictionaryConfig = dictionary.DictionaryConfig()  # the SAE on the dense model's channels
    batch_size: int = 64  # windows per forward pass


@dataclasses.dataclass
class PairStudy:
    """Everything measured on one pair."""

    pair: MatchedPair
    sets: list[units.UnitSet]  # one per class (without the SAE's encoder, so that a study pickles)
    records: list[UnitRecords]  # every unit's records
    activity: list[activity.UnitActivity]  # every unit's activation statistics (scoring split)
    sae_stats: dict[str, Any]  # the SAE's held-out NMSE, L0, dead fraction...


def model_key(name: str, model: SparseTransformer) -> str:
    """A cache key for a model: its name and a digest of its weights."""
    return f"{name}:{cache.tensor_digest(model.state_dict().values())}"


def study_pair(pair: MatchedPair, dense: SparseTransformer, sparse: SparseTransformer, windows: dict[str, torch.Tensor],
               tokenizer: Any, cfg: StudyConfig, seed: int, orient_fn: units.OrientFn = units.orient,
               share_fn: activity.ShareFn = activity.top_token_share, device: str | torch.device = "cpu") -> PairStudy:
    """Measure one pair (module docstring); ``windows``: ``{"train", "select", "score"}`` -> ``[n, pos]``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + pair.seed * 101 + int(round(pair.fraction * 1000)))
    h: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for side, m in (("dense", dense), ("sparse", sparse)):
        hooks = [units.neuron_hook(m), units.channel_hook(m)]
        h[side] = {split: units.harvest(m, windows[split], hooks, cfg.batch_size) for split in ("select", "score")}
    ch = units.channel_hook(dense)
    x = units.harvest(dense, windows["train"], [ch], cfg.batch_size)[ch][:, 1:].reshape(-1, dense.cfg.d_model)
    sae, sae_stats = dictionary.load_or_train_dictionary(model_key(pair.dense, dense), x, cfg.sae, device)

    def encode(a: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sae.encode(a.to(next(sae.parameters()).device)).float().cpu()

    sets = []
    for side, m, name in (("dense", dense, pair.dense), ("sparse", sparse, pair.sparse)):
        nh, chh = units.neuron_hook(m), units.channel_hook(m)
        sel = h[side]["select"]
        sets.append(units.choose(f"{side} neuron", name, nh, sel[nh], cfg.n_units, gen, signed=False))
        sets.append(units.choose(f"{side} channel", name, chh, sel[chh], cfg.n_units, gen, signed=True,
                                 orient_fn=orient_fn))
        d = units.random_directions(m.cfg.d_model, cfg.n_units, gen)
        sets.append(units.choose(f"{side} random", name, chh, sel[chh], cfg.n_units, gen, signed=True,
                                 orient_fn=orient_fn, directions=d))
    sets.append(units.choose("sae latent", pair.dense, ch, h["dense"]["select"][ch], cfg.n_units, gen, signed=False,
                             encoder=encode))
    recs, acts = [], []
    vocab = int(dense.cfg.d_vocab)
    for s in sets:
        side = "sparse" if s.model == pair.sparse else "dense"
        a_sel, a_sco = s.acts(h[side]["select"][s.hook]), s.acts(h[side]["score"][s.hook])
        names = s.names()
        for j, n in enumerate(names):
            recs.append(explain.split_records(n, s.cls, a_sel[:, :, j], a_sco[:, :, j], windows["select"],
                                              windows["score"], tokenizer, cfg.rec, gen))
        acts += activity.unit_activity(names, s.cls, pair.label, pair.fraction, a_sco, windows["score"], vocab, share_fn)
    kept = [dataclasses.replace(s, encoder=None) for s in sets]  # picklable: the SAE's closure left out
    return PairStudy(pair, kept, recs, acts, sae_stats)
