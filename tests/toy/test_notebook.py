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


# --------------------------------------------------------------------------- section 4: which fractions stick


def sweep_weights() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 8 -> 2 models, densest first: two with 2 orthogonal features (D* = 1), one with two antipodal pairs
    (D* = 1/2), one with all 8 features on a regular octagon at norm 1.2 (D* = m/n = 1/4, the floor)."""
    W = torch.zeros(4, 2, 8)
    W[0, 0, 0] = W[0, 1, 1] = W[1, 0, 0] = W[1, 1, 1] = 1.0
    W[2, 0, 0], W[2, 0, 1], W[2, 1, 2], W[2, 1, 3] = 1.0, -1.0, 1.0, -1.0
    angles = torch.arange(8) * (2 * torch.pi / 8)
    W[3] = 1.2 * torch.stack([angles.cos(), angles.sin()])
    return torch.tensor([1.0, 0.5, 0.2, 0.1]), W


def test_sticky_reading_counts_the_curve_and_the_dots_at_their_nearest_value():
    p, W = sweep_weights()
    r = nbk.sticky_reading(p, W, toy.ToyTrainConfig(steps=123, batch_size=45))
    by = {c.label: c for c in r.fractions}
    assert [c.label for c in r.fractions] == ["1", "3/4", "2/3", "1/2", "2/5", "3/8"]
    assert (by["1"].sparsities_near, by["1"].longest_run, by["1"].dots_near, by["1"].sparsities_piled) == (2, 2, 4, 2)
    assert by["1"].inverse_densities == (1.0, 2.0)
    assert (by["1/2"].sparsities_near, by["1/2"].longest_run, by["1/2"].dots_near, by["1/2"].sparsities_piled) == (
        1, 1, 4, 1)
    assert all(by[k].sparsities_near == by[k].dots_near == 0 for k in ("3/4", "2/3", "2/5", "3/8"))
    assert r.floor.label == "m/n" and r.floor.value == 0.25
    assert (r.floor.sparsities_near, r.floor.dots_near, r.floor.sparsities_piled) == (1, 8, 1)
    assert (r.n_features, r.d_hidden, r.n_sparsities, r.steps, r.batch_size, r.dots_total) == (8, 2, 4, 123, 45, 16)
    assert r.spacing == pytest.approx((2 + 2.5 + 2) / 3, abs=0.01)
    assert (r.sparsest_represented, r.sparsest_min_norm, r.sparsest_dims_per_feature) == (8, 1.2, 0.25)
    assert r.sparsest_dims_per_feature_raw == pytest.approx(2 / (8 * 1.44), abs=1e-3)
    assert r.sparsest_dimensionality_sum == pytest.approx(2.0) and r.sparsest_median_dimensionality == 0.25
    assert (r.dense_dims_per_feature, r.dense_represented, r.dense_median_dimensionality) == (1.0, 2, 1.0)
    assert nbk.sticky_records(r)["1/2"] == {"sparsities_near": 1, "longest_run": 1, "dots_near": 4,
                                            "sparsities_piled": 1}


def test_sticky_reading_uses_the_given_feature_dimensionality():
    p, W = sweep_weights()
    r = nbk.sticky_reading(p, W, toy.ToyTrainConfig(), feature_dimensionality=lambda W: torch.zeros(W.shape[0], 8))
    assert sum(c.dots_near for c in r.fractions) == 0 and r.floor.dots_near == 0
    assert [c.sparsities_near for c in r.fractions][0] == 2  # the curve does not depend on D_f


def test_sticky_markdown_says_what_sticks_what_passes_what_is_absent_and_the_floor():
    p, W = sweep_weights()
    text = nbk.sticky_markdown(nbk.sticky_reading(p, W, toy.ToyTrainConfig(steps=123, batch_size=45)))
    assert "| 1/2 | 1 of 4 | 1 | 4 of 16 | 1 |" in text and "| m/n = 0.25 | 1 of 4 | 1 | 8 of 16 | 1 |" in text
    assert "1, 2 sparsities in a row (1/(1-S) = 1, 2)" in text
    assert "the curve comes near 1/2 at a single sparsity" in text
    assert "never within 0.05 of 3/4, 2/3, 2/5 and 3/8" in text
    assert "**The floor m/n = 2/8 = 0.25**" in text and "all 8 features are represented (smallest norm 1.20)" in text
    assert "trained 123 steps with batches of 45" in text
    # a sweep that never reaches the floor says so instead
    W2 = W.clone()
    W2[3] = W[2]
    text2 = nbk.sticky_markdown(nbk.sticky_reading(p, W2, toy.ToyTrainConfig()))
    assert "4 of 8 features are represented" in text2 and "run out of features" not in text2
    assert "**Plateaus**" in text2 and "1/2, 2 sparsities in a row" in text2


# --------------------------------------------------------------------------- section 7: the table's reading


def level(kept, nonzero, rep, fpn, interf, dpf, loss, pruned):
    return nbk.WeightSparseLevel(kept, nonzero, rep, fpn, interf, dpf, loss, pruned)


def test_weight_sparse_markdown_reads_the_tables_own_numbers():
    table = (level(1.0, 100, 15.75, 8.75, 2.516, 0.325, 0.0324, 0.0324),
             level(0.1, 10, 9.75, 1.95, 0.98, 0.513, 0.0487, 0.0986),
             level(0.05, 5, 5.0, 1.35, 0.503, 1.0, 0.0918, 0.0800))
    rows = [{"kept_fraction": k, "dead_dimensions": d} for k, d in ((1.0, 0), (1.0, 0), (0.1, 1), (0.05, 1), (0.05, 2))]
    text = nbk.weight_sparse_markdown(table, rows, 5, 20)
    assert "**Features represented** 15.75 → 5 (falls at every step)" in text
    assert "**interference** 2.516 → 0.503 (falls at every step)" in text
    assert "8.75 → 1.35 (falls at every step): above 1 even at the sparsest level" in text
    assert "About 5 nonzero weights for m = 5 dimensions" in text and "at least m/5 = 1 by construction" in text
    assert "is 0.503 there: represented features still share directions" in text
    assert "0.0324 → 0.0918 (rises at every step)" in text
    assert "higher loss than training sparse at 1 of the 2 sparser levels" in text
    assert "0 per model dense, 1.5 at the sparsest level" in text
    # no interference left, a budget above m, a non-monotone column
    table2 = (level(1.0, 100, 15.0, 8.0, 2.0, 0.3, 0.03, 0.03), level(0.5, 50, 16.0, 1.0, 0.0, 0.4, 0.02, 0.01))
    rows2 = [{"kept_fraction": 1.0, "dead_dimensions": 0}, {"kept_fraction": 0.5, "dead_dimensions": 0}]
    text2 = nbk.weight_sparse_markdown(table2, rows2, 5, 20)
    assert "by construction" not in text2 and "**`dims_per_feature`** 0.3 → 0.4 (rises at every step)" in text2
    assert "above 1 even" not in text2 and "at 0 of the 1 sparser levels" in text2
    table3 = (*table2, level(0.05, 5, 5.0, 1.0, 0.0, 1.0, 0.09, 0.1))
    text3 = nbk.weight_sparse_markdown(table3, [*rows2, {"kept_fraction": 0.05, "dead_dimensions": 0}], 5, 20)
    assert "15 → 5 (falls overall, not at every step)" in text3 and "(nearly) orthogonal" in text3


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
