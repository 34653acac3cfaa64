"""course_lib.toy.notebook: notebook 01's parameter checks and sizes, and the weight-sparse comparison's table."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from course_lib import runtime, toy, weight_sparsity
from course_lib.toy import notebook as nbk


@pytest.fixture
def run(tmp_path):
    def make(profile: str = "smoke") -> runtime.Run:
        return runtime.start_run(profile, 0, str(tmp_path / profile), "cpu")
    return make


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("profile, steps, big_steps, seeds, instances, grid, replicates", [
    ("smoke", 300, 200, 1, 8, 4, 2), ("workshop", 4000, 2500, 3, 16, 10, 4), ("full", 10_000, 10_000, 4, 30, 16, 8)])
def test_settings_derive_the_profiles_sizes(run, profile, steps, big_steps, seeds, instances, grid, replicates):
    r = run(profile)
    s = nbk.settings(r, True, 200, [0.1, 1.0, 0.5, 1])
    assert (s.train.steps, s.big_train.steps, s.seeds_per_setting, s.big_sweep_instances, s.phase_grid,
            s.ws_replicates) == (steps, big_steps, seeds, instances, grid, replicates)
    assert s.use_reference_solutions is True and s.big_sweep_features == 200
    assert s.weight_sparsity_levels == (1.0, 0.5, 0.1)  # distinct, densest first
    assert all(isinstance(c, toy.ToyTrainConfig) for c in (s.train, s.big_train, s.ws_train, s.phase_train,
                                                            s.priv_train, s.widget_train))
    assert dataclasses.is_dataclass(s) and type(s).__dataclass_params__.frozen
    assert nbk.settings_text(s, r) == f"profile={profile} device=cpu steps={steps} (big sweep {big_steps})"


def test_workshop_sizes_are_the_notebooks(run):
    s = nbk.settings(run("workshop"), False, 100, (1.0, 0.1))
    assert s.train == toy.ToyTrainConfig(steps=4000, batch_size=1024, lr=1e-3)
    assert s.ws_train == toy.ToyTrainConfig(steps=3000, batch_size=512, lr=1e-3)
    assert s.phase_train == toy.ToyTrainConfig(steps=3000, batch_size=256, lr=1e-3)
    assert s.priv_train == toy.ToyTrainConfig(steps=8000, batch_size=1024, lr=1e-3)
    assert s.widget_train == toy.ToyTrainConfig(steps=800, batch_size=256, lr=1e-2)


@pytest.mark.parametrize("args, message", [
    (("yes", 100, [1.0, 0.1]), "USE_REFERENCE_SOLUTIONS='yes' has type str; expected bool"),
    ((False, 150, [1.0, 0.1]), "BIG_SWEEP_FEATURES=150 is not valid; valid values: 100, 200"),
    ((False, 100, 0.5), "WEIGHT_SPARSITY_LEVELS=0.5 has type float; expected list or tuple"),
    ((False, 100, [0.5]), "WEIGHT_SPARSITY_LEVELS needs at least 2 kept fractions, e.g. [1.0, 0.1]"),
    ((False, 100, [1.0, 0.001]), "WEIGHT_SPARSITY_LEVELS entry=0.001 is out of range; valid values: [0.01, 1.0]"),
    ((False, 100, [1.0, "a"]), "WEIGHT_SPARSITY_LEVELS entry='a' has type str; expected int or float"),
    ((False, 100, [0.5, 0.5]), "WEIGHT_SPARSITY_LEVELS=[0.5, 0.5] needs at least 2 different kept fractions in "
                               "[0.01, 1.0], e.g. [1.0, 0.1]"),
])
def test_settings_reject_bad_values_naming_the_valid_ones(run, args, message):
    with pytest.raises(runtime.ParameterError, match=re.escape(message)):
        nbk.settings(run(), *args)


# --------------------------------------------------------------------------- the weight-sparse comparison


def reference_topk(W: torch.Tensor, k: int) -> torch.Tensor:
    return W * weight_sparsity.topk_mask(W, k, instance_dim=0)


def small_model(kept: list[float]) -> toy.ToyModel:
    cfg = toy.ToyConfig(n_features=6, d_hidden=3, n_instances=len(kept))
    return toy.ToyModel(cfg, torch.full((len(kept),), 0.2), toy.importances(6, 0.9, len(kept)),
                        generator=torch.Generator().manual_seed(0))


def test_prune_dense_once_prunes_the_dense_replicates_and_leaves_the_model_alone():
    kept = [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    model = small_model(kept)
    before = model.W.detach().clone()
    loss = nbk.prune_dense_once(model, kept, reference_topk)
    assert loss.shape == (6,) and torch.equal(model.W.detach(), before)
    assert torch.allclose(loss[:2], toy.evaluate_loss(model)[:2])  # kept fraction 1: the dense models themselves
    # instance 3 (kept 0.5) is dense replicate 1 (3 % 2) pruned to 9 of its 18 weights
    twin = small_model(kept)
    with torch.no_grad():
        twin.W[3] = reference_topk(model.W[1:2], 9)[0]
        twin.b_final[3] = model.b_final[1]
    assert float(loss[3]) == pytest.approx(float(toy.evaluate_loss(twin)[3]))
    calls = []
    nbk.prune_dense_once(model, kept, lambda W, k: calls.append(k) or reference_topk(W, k))
    assert calls == [18, 18, 9, 9, 2, 2]  # max(1, round(kept * m * n))


def rows_for(kept: list[float]) -> list[dict[str, float]]:
    keys = ["weight_nonzero_fraction", "features_represented", "features_per_neuron", "interference",
            "dims_per_feature", "loss"]
    return [{k: 0.1 * i + j for j, k in enumerate(keys)} for i in range(len(kept))]


def test_table_means_each_level_and_renders_as_the_notebook_printed():
    kept = [1.0, 1.0, 0.1, 0.1]
    rows = nbk.with_pruned_loss(rows_for(kept), kept, torch.tensor([0.5, 0.25, 0.125, 0.0625]))
    assert [r["kept_fraction"] for r in rows] == kept and rows[1]["loss_pruned_after"] == 0.25
    table = nbk.weight_sparse_table(rows, [1.0, 0.1])
    assert dataclasses.is_dataclass(table[0]) and type(table[0]).__dataclass_params__.frozen
    first = table[0]
    assert first.kept_fraction == 1.0 and first.nonzero_weights == 5 and isinstance(first.nonzero_weights, int)
    assert (first.features_represented, first.loss, first.loss_pruned_after) == (1.05, 5.05, 0.375)
    records = nbk.weight_sparse_records(table)
    assert list(records[0]) == ["kept_fraction", "nonzero_weights", "features_represented", "features_per_neuron",
                                "interference", "dims_per_feature", "loss", "loss_pruned_after"]
    header = list(records[0])
    expected = "\n".join([" | ".join(header)] + [" | ".join(f"{t[h]:>{len(h)}}" for h in header) for t in records])
    assert nbk.weight_sparse_table_text(table) == expected
    assert nbk.weight_sparse_table_text(table).splitlines()[1].startswith(" " * 10 + "1.0 | " + " " * 14 + "5 |")


# --------------------------------------------------------------------------- section 2: the learner's loss


def test_orthogonal_baseline_stores_the_first_m_features_and_guesses_the_mean_of_the_rest():
    p = torch.tensor([1.0, 0.2])
    W, b = nbk.orthogonal_baseline(p, 2, 5)
    assert W.shape == (2, 2, 5) and b.shape == (2, 5)
    assert torch.equal(W[1], torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]]))
    assert torch.allclose(b, torch.tensor([[0, 0, 0.5, 0.5, 0.5], [0, 0, 0.1, 0.1, 0.1]]))
    x = toy.generate_batch(p, 5, 20000, torch.Generator().manual_seed(0))
    x_hat, _ = toy.forward_and_loss(W, b, toy.importances(5, 0.9, 2), x)
    assert torch.equal(x_hat[:, :, :2], x[:, :, :2])  # the stored features come back exactly
    assert torch.allclose(x_hat[:, :, 2:].mean(1), x[:, :, 2:].mean(1), atol=0.01)  # the rest: their mean


def test_loss_markdown_renders_both_ends_and_where_the_trained_model_pulls_ahead():
    text = nbk.loss_markdown([0.0, 0.5, 0.95], torch.tensor([0.2, 0.1, 0.01]), torch.tensor([0.2, 0.2, 0.05]), 4096, 2)
    assert "batch of 4096" in text and "(the 2 most important features on their own axes" in text
    assert "batch of 4096" in text and "S = 0.00 the trained loss is 0.2000 against 0.2000 (ratio 1.00)" in text
    assert "at S = 0.950 it is 0.0100 against 0.0500 (ratio 0.20)" in text
    assert "From S = 0.50 on the trained model beats" in text
    gap = nbk.loss_markdown([0.0, 0.5, 0.95], torch.tensor([0.2, 0.1, 0.2]), torch.tensor([0.2, 0.2, 0.2]), 8, 2)
    assert "(not at every sparser setting)" in gap
    none = nbk.loss_markdown([0.0, 0.95], torch.tensor([0.1, 0.05]), torch.tensor([0.1, 0.051]), 8, 2)
    assert "At no sparsity does the trained model beat" in none
