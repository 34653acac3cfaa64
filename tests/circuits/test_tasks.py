"""course_lib.circuits.tasks: prompts whose answer is one clean next token."""

from __future__ import annotations

import pytest
import torch

from course_lib import circuits, corpus


@pytest.fixture(scope="module")
def tokenizer():
    return corpus.train_tokenizer(corpus.config_for("smoke"))

@pytest.fixture(scope="module")
def workshop_tokenizer():
    return corpus.train_tokenizer(corpus.config_for("workshop"))


@pytest.mark.parametrize("task", sorted(circuits.SUITE))
def test_answers_are_single_tokens_and_the_next_token(task, tokenizer, workshop_tokenizer):
    # the notebook's four tasks fit even the smoke BPE; the others ('cls', '))') need the workshop one
    tokenizer = tokenizer if task in circuits.TASKS else workshop_tokenizer
    t = circuits.SUITE[task]
    ids = [circuits.single_token_id(tokenizer, a) for a in t.answers]
    assert len(set(ids)) == 2
    data = circuits.make_task_data(task, tokenizer, 40, seed=0, split="train")
    for prompt, row, last, (c, w) in zip(data.prompts, data.tokens, data.last, data.answer_ids.tolist()):
        assert {c, w} == set(ids)
        assert tokenizer.encode(prompt).ids == row[: last + 1].tolist()
        # the prompt followed by its correct answer tokenizes as prompt tokens + one answer token
        assert tokenizer.encode(prompt + tokenizer.decode([c])).ids == row[: last + 1].tolist() + [c]
    # both classes present, balanced
    correct = data.answer_ids[:, 0]
    assert (correct == ids[0]).sum() == (correct == ids[1]).sum() == 20

def test_single_token_check_rejects_multi_token_answers(tokenizer):
    with pytest.raises(ValueError, match="not one"):
        circuits.single_token_id(tokenizer, "]] and more")

def test_train_and_test_prompts_differ(tokenizer):
    tr = circuits.make_task_data("quote_close", tokenizer, 32, seed=0, split="train")
    te = circuits.make_task_data("quote_close", tokenizer, 32, seed=0, split="test")
    assert tr.prompts != te.prompts
    assert len(set(tr.prompts) & set(te.prompts)) < 8


def test_suite_has_at_least_six_tasks_and_keeps_the_notebook_four():
    assert len(circuits.SUITE) >= 6
    assert set(circuits.TASKS) <= set(circuits.SUITE)


@pytest.mark.parametrize("task", sorted(set(circuits.SUITE) - set(circuits.TASKS)))
def test_new_tasks_split_train_and_test(task, workshop_tokenizer):
    tr = circuits.make_task_data(task, workshop_tokenizer, 64, seed=0, split="train")
    te = circuits.make_task_data(task, workshop_tokenizer, 64, seed=0, split="test")
    assert len(set(tr.prompts) & set(te.prompts)) < 32  # templates are small, but the seeds differ
    assert tr.prompts != te.prompts


@pytest.mark.parametrize("task", sorted(circuits.SUITE))
def test_the_answer_depends_on_the_class(task):
    # same rng state, the two classes: the correct answer swaps (the context decides the token)
    import random
    t = circuits.SUITE[task]
    a, b = t.make(random.Random(1), 0), t.make(random.Random(1), 1)
    assert (a.correct, a.wrong) == (b.wrong, b.correct)
    assert a.prompt != b.prompt


def test_task_corpus_is_deterministic_holds_answers_and_leaves_out_test_prompts(workshop_tokenizer):
    tok = workshop_tokenizer
    a = circuits.tasks.task_corpus(tok, 3000, exclude_n=256)
    assert a.numel() >= 3000 and torch.equal(a, circuits.tasks.task_corpus(tok, 3000, exclude_n=256))
    eos = tok.token_to_id(corpus.EOS)
    docs = tok.decode_batch([d for d in _split(a.tolist(), eos) if d])
    test = set(circuits.make_task_data("self_or_cls", tok, 256, 0, "test").prompts)
    seen = [d for d in docs if d.startswith("class ")]
    assert seen and all(d.endswith(("(cls", "(self")) for d in seen)
    assert not any(d.removesuffix("cls").removesuffix("self") in test for d in seen)
    # every task of the suite that fits the tokenizer is in it
    assert any(d.endswith(("'", '"')) for d in docs) and any(d.endswith("))") for d in docs)


def _split(ids, sep):
    out, cur = [], []
    for i in ids:
        if i == sep:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    return out
