"""course_lib.sae.synthetic: the three kinds of synthetic data, and the course's SAE trained on them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import runtime, sae
from course_lib.sae import recovery, synthetic


def test_config_validation_names_the_valid_values():
    with pytest.raises(runtime.ParameterError, match="independent"):
        synthetic.SyntheticConfig(kind="nested")  # type: ignore[arg-type]
    with pytest.raises(runtime.ParameterError, match="p_parent"):
        synthetic.SyntheticConfig(kind="hierarchical", p_fire=0.5)
    with pytest.raises(runtime.ParameterError, match="multiple"):
        synthetic.SyntheticConfig(n_features=30)


@pytest.mark.parametrize("kind", synthetic.DATA_KINDS)
def test_every_kind_has_the_expected_l0_unit_features_and_is_seeded(kind):
    cfg = synthetic.SyntheticConfig(kind=kind, n_train=20_000, n_eval=100)
    d = synthetic.make_data(cfg)
    assert d.features.shape == (64, 32) and torch.allclose(d.features.norm(dim=1), torch.ones(64))
    l0 = float((d.codes_train > 0).sum(1).float().mean())
    assert l0 == pytest.approx(cfg.expected_l0, rel=0.06)
    active = d.codes_train[d.codes_train > 0]
    assert active.min() >= cfg.magnitude_low and active.max() <= cfg.magnitude_high
    resid = d.x_train - d.codes_train @ d.features
    assert resid.std() == pytest.approx(cfg.noise, rel=0.05)
    again = synthetic.make_data(cfg)
    assert torch.equal(again.x_train, d.x_train)
    assert not torch.equal(synthetic.make_data(dataclasses.replace(cfg, seed=1)).features, d.features)


def test_hierarchical_children_never_fire_without_their_parent_and_are_exclusive():
    cfg = synthetic.SyntheticConfig(kind="hierarchical", n_train=20_000)
    on = synthetic.make_data(cfg).codes_train > 0
    groups = synthetic.hierarchy(cfg)
    assert len(groups) == 16 and all(len(c) == 3 for _, c in groups)
    child_fired = 0
    for parent, children in groups:
        kids = on[:, children]
        assert not (kids.any(1) & ~on[:, parent]).any()  # child => parent
        assert kids.sum(1).max() <= 1  # mutually exclusive
        child_fired += int(kids.any(1).sum())
        assert float(on[:, parent].float().mean()) == pytest.approx(cfg.p_parent, abs=0.01)
    parents_fired = int(on[:, : cfg.n_parents].sum())
    assert child_fired / parents_fired == pytest.approx(cfg.child_given_parent, abs=0.03)


def test_correlated_groups_co_fire_and_keep_their_marginals():
    cfg = synthetic.SyntheticConfig(kind="correlated", n_train=40_000)
    on = (synthetic.make_data(cfg).codes_train > 0).double()
    assert float(on.mean()) == pytest.approx(cfg.p_fire, rel=0.05)
    corr = torch.corrcoef(on.t())
    within = torch.stack([corr[i, i + 1] for i in range(0, 64, 4)]).mean()
    between = torch.stack([corr[i, i + 4] for i in range(0, 60, 4)]).mean()
    assert within > 0.2 and abs(float(between)) < 0.03
    indep = (synthetic.make_data(dataclasses.replace(cfg, kind="independent")).codes_train > 0).double()
    assert abs(float(torch.corrcoef(indep.t())[0, 1])) < 0.03


def test_topk_sae_recovers_independent_features_and_is_cached():
    cfg = synthetic.SyntheticConfig(kind="independent", d=16, n_features=32, p_fire=0.06, n_train=4096, n_eval=2048)
    data = synthetic.make_data(cfg)
    sc = sae.SAEConfig(d_in=16, n_latents=64, k=3, dead_tokens=2_000)
    tc = sae.SAETrainConfig(n_tokens=30_000, batch_size=256, lr=1e-2, seed=0)
    m, hist = synthetic.load_or_train_synthetic(cfg, sc, tc, data=data)
    r = recovery.recovery_metrics(m, data.features, data.x_eval, data.codes_eval, synthetic.hierarchy(cfg))
    assert r["decoder_mcc"] > 0.9 and r["activation_mcc"] > 0.7 and r["nmse"] < 0.4, r
    rand = sae.SparseAutoencoder(sc)  # the same SAE, untrained: the floor
    r0 = recovery.recovery_metrics(rand, data.features, data.x_eval, data.codes_eval)
    assert r0["decoder_mcc"] < 0.6
    m2, hist2 = synthetic.load_or_train_synthetic(cfg, sc, tc)  # from the cache (no data passed)
    assert torch.allclose(m2.W_dec, m.W_dec) and hist2 == hist
    with pytest.raises(runtime.ParameterError, match="d_in"):
        synthetic.load_or_train_synthetic(cfg, dataclasses.replace(sc, d_in=8), tc)


def test_train_and_score_rows_and_table():
    base = synthetic.SyntheticConfig(d=8, n_features=16, p_fire=0.1, n_train=1024, n_eval=512)
    cfgs = [base, dataclasses.replace(base, kind="hierarchical")]
    saes = {"TopK k=2": sae.SAEConfig(d_in=8, n_latents=16, k=2, dead_tokens=1_000)}
    tc = sae.SAETrainConfig(n_tokens=2_048, batch_size=128, lr=3e-3)
    rows = synthetic.train_and_score(cfgs, saes, tc, seeds=[0, 1], progress=False)
    assert len(rows) == 4 and {r["data"] for r in rows} == {"independent", "hierarchical"}
    assert all(0 <= r["absorption"] <= 1 for r in rows)
    t = synthetic.table(rows, "decoder_mcc")
    assert set(t) == {("independent", "TopK k=2"), ("hierarchical", "TopK k=2")}
    sel = [r["decoder_mcc"] for r in rows if r["data"] == "hierarchical"]
    assert t[("hierarchical", "TopK k=2")]["mean"] == pytest.approx(sum(sel) / 2) and t[("hierarchical", "TopK k=2")]["n"] == 2
    import matplotlib.pyplot as plt

    for fig in (sae.plots.plot_synthetic_recovery(rows), sae.plots.plot_absorption(rows)):
        assert len(fig.axes) == 2 and all(ax.has_data() for ax in fig.axes)
        plt.close(fig)


def test_an_sae_with_the_same_seed_does_not_start_from_the_true_features():
    """Both draw randn first: with equal generator seeds the SAE's initial decoder would BE the ground truth."""
    cfg = synthetic.SyntheticConfig(seed=0)
    f = synthetic.make_data(cfg).features
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=cfg.d, n_latents=cfg.n_features, k=3),
                              torch.Generator().manual_seed(cfg.seed))
    assert recovery.decoder_mcc(f, m.W_dec.detach()) < 0.6
