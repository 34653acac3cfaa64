"""course_lib.circuits.reference_training: checkpoints are exact and resuming changes nothing."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from course_lib import corpus
from course_lib.circuits import checkpoints
from course_lib.circuits import reference_training as rt
from course_lib.circuits.training import CircuitTrainConfig
from course_lib.circuits.transformer import SparseTransformerConfig

ARCH = SparseTransformerConfig(d_model=32, n_layers=1, d_mlp=64, n_ctx=32)


def spec(steps: int = 12, frac: float = 0.2, seed: int = 0) -> rt.RunSpec:
    # the sparse anneal ends at 50% of training: the interruption at step 6 of 12 falls inside it
    return rt.RunSpec(f"t-{frac:g}-{steps}", "sparse", ARCH,
                      CircuitTrainConfig(steps=steps, batch_size=4, target_fraction=frac, seed=seed), "smoke", 4, 4, 8)


@pytest.fixture(scope="module")
def streams():
    return {"smoke": corpus.data_streams("smoke")}


@pytest.fixture(scope="module")
def data(streams):
    tok, _, val = streams["smoke"]
    return rt.eval_data(spec(), tok, val)


def _same(a: rt.RunState, b: rt.RunState) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    for i in oa:
        for k in oa[i]:
            assert torch.equal(oa[i][k], ob[i][k]), (i, k)
    assert torch.equal(a.gen.get_state(), b.gen.get_state())
    assert a.step == b.step


def test_interrupted_and_resumed_run_is_bit_identical(streams, data, tmp_path):
    stream = streams["smoke"][1]
    straight = rt.train_steps(rt.new_state(spec()), stream, data)
    half = rt.train_steps(rt.new_state(spec()), stream, data, until=6)
    assert half.step == 6 and not half.done
    rt.save_state(half, tmp_path / "state.safetensors")
    del half
    resumed = rt.load_state(spec(), tmp_path / "state.safetensors")
    assert resumed.step == 6
    rt.train_steps(resumed, stream, data)
    _same(straight, resumed)
    assert resumed.log["loss"] == straight.log["loss"]
    assert [e["val_loss"] for e in resumed.log["eval"]] == [e["val_loss"] for e in straight.log["eval"]]
    # and training did something: the weights moved and are sparse at the end
    fresh = rt.new_state(spec()).model.state_dict()
    assert any(not torch.equal(v, straight.model.state_dict()[k]) for k, v in fresh.items())
    nz = [float((p != 0).float().mean()) for p in straight.model.sparsified_parameters().values()]
    assert max(nz) <= 0.2 + 0.02


def test_a_different_seed_gives_different_weights(streams, data):
    stream = streams["smoke"][1]
    a = rt.train_steps(rt.new_state(spec(steps=4)), stream, data)
    b = rt.train_steps(rt.new_state(spec(steps=4, seed=1)), stream, data)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_state_of_another_spec_is_refused(streams, data, tmp_path):
    st = rt.new_state(spec())
    rt.save_state(st, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="another spec"):
        rt.load_state(spec(frac=0.1), tmp_path / "s.safetensors")


def test_checkpoints_of_older_specs_load_when_new_fields_are_at_their_defaults():
    saved = json.loads(json.dumps(rt.spec_key(spec())))
    assert rt.same_spec(saved, spec())
    older = {k: v for k, v in saved.items() if k != "task_mix"}  # written before task_mix existed
    del older["train"]["eval_windows"]  # and before a train-config field
    assert rt.same_spec(older, spec())
    assert not rt.same_spec(older, dataclasses.replace(spec(), task_mix=0.05))  # a real change
    assert not rt.same_spec({**saved, "task_mix": 0.05}, spec())
    assert not rt.same_spec({**saved, "version": "other"}, spec())
    changed = json.loads(json.dumps(saved))
    changed["train"]["steps"] = 13
    assert not rt.same_spec(changed, spec())


def test_train_set_stops_resumes_skips_and_exports(streams, tmp_path):
    specs = [spec(steps=8, frac=1.0), spec(steps=8, frac=0.2)]
    # "interrupt" after the first evaluation slice: nothing is done, a checkpoint exists
    states = rt.train_set(specs, tmp_path / "set", checkpoint_s=0.0, stop_after_s=0.0, streams=streams)
    assert [s.step for s in states] == [4, 0] and not any(s.done for s in states)
    st0, st1 = (rt.run_status(sp, tmp_path / "set") for sp in specs)
    assert (st0["step"], len(st0["eval"]), st1["step"], st1["eval"]) == (4, 1, 0, [])
    lines = rt.status_lines(specs, tmp_path / "set")
    assert lines[0].startswith(f"{specs[0].name} (sparse): step 4/8") and lines[1].split()[0] == "4"
    assert rt.load_state(specs[0], tmp_path / "set" / specs[0].name / rt.STATE).step == 4
    assert not (tmp_path / "set" / specs[1].name).exists()
    states = rt.train_set(specs, tmp_path / "set", streams=streams)
    assert all(s.done for s in states)
    straight = rt.train_set(specs, tmp_path / "straight", streams=streams)
    for a, b in zip(states, straight):
        _same(a, b)
    files = [tmp_path / "set" / sp.name / rt.STATE for sp in specs]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = rt.train_set(specs, tmp_path / "set", streams=streams)  # done: loaded, not retrained
    assert [f.stat().st_mtime_ns for f in files] == stamps
    for a, b in zip(again, states):
        _same(a, b)
    m = rt.export_set(states, tmp_path / "out", "cmd", "test")
    assert json.loads((tmp_path / "out" / rt.MANIFEST).read_text()) == json.loads(json.dumps(m))
    for entry, st in zip(m["models"], states):
        w = checkpoints.load_compact(tmp_path / "out" / entry["file"])
        for k, v in st.model.state_dict().items():
            assert torch.equal(w[k], v)
        assert set(entry["task_loss"]) == set(st.log["eval"][-1]["task_loss"])
        assert entry["steps"] == 8 and entry["val_loss"] > 0
    assert m["models"][1]["nonzero_fraction"] < 0.25 < m["models"][0]["nonzero_fraction"]
    loaded = rt.load_set(tmp_path / "out")
    assert [e["name"] for e, _ in loaded] == [s.name for s in specs]
    for (_, model), st in zip(loaded, states):
        for k, v in st.model.state_dict().items():
            assert torch.equal(model.state_dict()[k], v)


def test_reference_set_is_ordered_and_wide_model_matches_nonzeros():
    specs = rt.reference_set()
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    n_eq, n_sp = len(rt.equal_data_set()), len(rt.sparser_set())
    assert [s.name for s in specs[-n_eq - n_sp:]] == [s.name for s in rt.equal_data_set() + rt.sparser_set()]
    for part in (specs[:-n_eq - n_sp], specs[-n_eq - n_sp:-n_sp], specs[-n_sp:]):
        seeds = [s.train.seed for s in part]
        assert seeds == sorted(seeds) and set(seeds) >= {0, 1, 2}  # one seed of everything first
    groups = {s.group for s in specs}
    assert "dense" in groups and sum(g.startswith("sparse") for g in groups) >= 2
    dense_cfgs = {(s.model.d_model, s.train.steps) for s in specs if s.group == "dense"}
    assert len(dense_cfgs) >= 3
    wide = next(s for s in specs if s.group.startswith("wide"))
    narrow = next(s for s in specs if s.group == f"sparse {0.1:g}")
    assert wide.model.d_model > narrow.model.d_model
    assert abs(rt.nonzero_count(wide) / rt.nonzero_count(narrow) - 1) < 0.1
    assert all(dataclasses.replace(s.train).steps % s.eval_every == 0 for s in specs)


def test_mixed_stream_appends_the_task_share(streams):
    tok, train, _ = streams["smoke"]
    assert rt.mixed_stream(train, tok, 0.0) is train
    mixed = rt.mixed_stream(train, tok, 0.1)
    assert torch.equal(mixed[: train.numel()], train)
    assert (mixed.numel() - train.numel()) / mixed.numel() == pytest.approx(0.1, abs=1e-3)


def test_reference_set_export_fits_40_mb_and_estimate_matches_a_real_file(tmp_path):
    assert sum(rt.export_bytes(s) for s in rt.reference_set()) <= 40e6
    # the estimate is the real size to within a few kB
    st = rt.new_state(spec(frac=0.2))
    for p in st.model.sparsified_parameters().values():
        p.data.copy_(rt.weight_sparsity.project_topk(p.data, 0.2))
    checkpoints.save_compact(st.model.state_dict(), tmp_path / "m.safetensors")
    size = (tmp_path / "m.safetensors").stat().st_size
    assert abs(size - rt.export_bytes(spec(frac=0.2))) < 20_000  # zero biases and the header: a few kB


def test_export_carries_the_tokenizer_and_log_and_damage_is_named(streams, tmp_path):
    tok = streams["smoke"][0]
    specs = [spec(steps=8, frac=0.2)]
    states = rt.train_set(specs, tmp_path / "set", streams=streams)
    m = rt.export_set(states, tmp_path / "out", "cmd", "test", tok)
    assert m["tokenizer"] == rt.TOKENIZER
    again, data = rt.set_tokenizer("test", str(tmp_path / "out"))
    assert data == "smoke" and again.encode("def f(x):").ids == tok.encode("def f(x):").ids
    log = m["models"][0]["log"]
    assert log["kept_fraction"] == sorted(log["kept_fraction"], reverse=True)
    assert log["kept_fraction"][-1] == pytest.approx(0.2)
    assert len(log["step"]) == len(log["kept_fraction"]) == len(log["loss"]) <= 101
    # a truncated model file: a clear error naming it, and how to get the set back
    f = tmp_path / "out" / m["models"][0]["file"]
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(rt.ReferenceSetError, match=f.name):
        rt.load_set(tmp_path / "out")
    with pytest.raises(rt.ReferenceSetError, match="REFERENCE_SET='retrain'"):
        rt.obtain_set("test", str(tmp_path / "out"))
    with pytest.raises(rt.ReferenceSetError, match="manifest.json"):
        rt.set_tokenizer("test", str(tmp_path / "missing"))


def test_trained_with_the_given_schedule_and_projection(streams, data):
    calls = []

    def fraction(step, total, target, a0, a1):
        calls.append(step)
        return 0.5

    st = rt.new_state(spec(steps=4, frac=0.2))
    rt.train_steps(st, streams["smoke"][1], data, fraction_fn=fraction,
                   project_fn=lambda w, f: rt.weight_sparsity.project_topk(w, f))
    assert calls == [0, 1, 2, 3] and st.log["kept_fraction"] == [0.5] * len(st.log["step"])
    nz = rt.weight_sparsity.nonzero_fraction(st.model.sparsified_parameters().values())
    assert 0.45 < nz <= 0.55


def test_the_smoke_set_has_a_dense_curve_and_a_sparse_model():
    specs = rt.smoke_set()
    assert [s.group for s in specs].count("dense") == 2 and len({s.train.steps for s in specs}) == 2
    assert all(s.data == "smoke" for s in specs) and any(s.train.target_fraction < 1 for s in specs)


def test_the_reference_trainer_and_train_take_the_same_steps(streams, data):
    """One training step (training.train_step) behind both: from the same initial state, with the same seed,
    they end at the same weights bit for bit."""
    from course_lib.circuits import training

    stream = streams["smoke"][1]
    st = rt.train_steps(rt.new_state(spec(steps=10)), stream, data)
    model = rt.new_state(spec(steps=10)).model
    log = training.train(model, stream, spec(steps=10).train, progress=False)
    for k, v in st.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert log["loss"][-1] == st.log["loss"][-1]


def test_equal_data_and_sparser_runs_see_the_sparse_models_data():
    sparse16k = {(s.train.steps, s.task_mix, s.data, s.train.batch_size) for s in rt.reference_set()
                 if s.train.target_fraction < 1}
    assert len(sparse16k) == 1
    for s in rt.equal_data_set() + rt.sparser_set():
        assert (s.train.steps, s.task_mix, s.data, s.train.batch_size) in sparse16k
    assert sorted({s.model.d_model for s in rt.equal_data_set()}) == list(rt.EQUAL_DATA_WIDTHS)
    for s in rt.sparser_set():  # embeddings at one density; blocks at the target
        assert s.train.embed_fraction == rt.SPARSER_EMBED_FRACTION and s.train.anneal_shape == "geometric"
        m = rt.SparseTransformer(s.model)
        n_embed = sum(p.numel() for n, p in m.sparsified_parameters().items() if n in rt.EMBEDDING_PARAMETERS)
        n_block = sum(p.numel() for n, p in m.sparsified_parameters().items() if n not in rt.EMBEDDING_PARAMETERS)
        expect = s.train.embed_fraction * n_embed + s.train.target_fraction * n_block
        assert abs(rt.nonzero_count(s) - expect) < 40  # keep_count rounds up per tensor


def test_merge_adds_runs_to_an_exported_set_and_full_split_losses_are_recorded(streams, tmp_path):
    tok = streams["smoke"][0]
    first = rt.train_set([spec(steps=4, frac=0.2)], tmp_path / "set", streams=streams)
    rt.export_set(first, tmp_path / "out", "cmd one", "test", tok)
    more = rt.train_set([spec(steps=4, frac=1.0), spec(steps=6, frac=0.2)], tmp_path / "set", streams=streams)
    m = rt.merge_into(more, tmp_path / "out", "cmd two")
    assert [e["name"] for e in m["models"]] == ["t-0.2-4", "t-1-4", "t-0.2-6"]
    assert m["command"] == "cmd one" and m["models"][1]["command"] == "cmd two" and "machine" in m["models"][2]
    assert not (tmp_path / "out" / ".merge").exists()
    loaded = rt.load_set(tmp_path / "out")
    assert len(loaded) == 3
    losses = rt.full_split_losses(tmp_path / "out")
    again = json.loads((tmp_path / "out" / rt.MANIFEST).read_text())
    assert [e["val_loss_full"] for e in again["models"]] == [losses[e["name"]] for e in again["models"]]
    # the whole split: as many windows as the validation stream holds, not the 4 logged during training
    _, _, val = streams["smoke"]
    w = corpus.windows(val, ARCH.n_ctx + 1)
    assert w.shape[0] > 4
    assert losses["t-1-4"] == pytest.approx(rt.eval_loss(loaded[1][1], w), rel=1e-6)
