"""course_lib.sae.controls: the single-factor controls of the dead-latent fixes and the effect verdicts."""

from __future__ import annotations

import dataclasses

import pytest

from course_lib import sae
from course_lib.sae import controls


def _diff(a: sae.SAEConfig, b: sae.SAEConfig) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def test_each_single_factor_control_differs_from_the_recipe_in_exactly_one_switch():
    recipe = sae.SAEConfig(d_in=16, n_latents=64, k=4)
    cfgs = controls.fix_controls(recipe)
    assert list(cfgs) == ["all fixes", "no AuxK", "no tied init", "no median b_pre", "no fixes"]
    assert cfgs["all fixes"] == recipe
    assert _diff(recipe, cfgs["no AuxK"]) == {"aux_coef"} and cfgs["no AuxK"].aux_coef == 0
    assert _diff(recipe, cfgs["no tied init"]) == {"tied_init"}
    assert _diff(recipe, cfgs["no median b_pre"]) == {"median_init"}
    assert _diff(recipe, cfgs["no fixes"]) == {"aux_coef", "tied_init", "median_init"}
    for fix in controls.FIXES:
        on = controls.switches(cfgs[controls.without(fix)])
        assert on == {f: f != fix for f in controls.FIXES}
    assert not any(controls.switches(cfgs["no fixes"]).values())


def test_recipe_must_have_every_fix_on():
    with pytest.raises(ValueError, match="every fix on"):
        controls.fix_controls(sae.SAEConfig(d_in=16, n_latents=64, k=4, tied_init=False))


def test_switches_change_the_initialisation():
    """The switches are real: tied init copies the decoder into the encoder; median init moves b_pre off 0."""
    x = torch_data()
    for name, cfg in controls.fix_controls(sae.SAEConfig(d_in=8, n_latents=32, k=4)).items():
        m = sae.SparseAutoencoder(cfg)
        m.init_from_sample(x)
        assert bool((m.W_enc == m.W_dec).all()) == cfg.tied_init, name
        assert bool(m.b_pre.abs().sum() > 0) == cfg.median_init, name


def torch_data():
    import torch

    return torch.randn(256, 8, generator=torch.Generator().manual_seed(0)) + 3.0


def test_effects_verdicts():
    values = {
        "all fixes": [0.00, 0.01, 0.02],
        "no AuxK": [0.00, 0.01, 0.02],  # identical: no effect
        "no tied init": [0.01, 0.03, 0.02],  # overlaps the recipe's seeds: not measurable
        "no median b_pre": [0.40, 0.45, 0.50],  # far outside: measurable
        "no fixes": [0.5, 0.5, 0.5],
    }
    eff = controls.effects(values)
    assert eff["AuxK"] == {"delta": 0.0, "noise": pytest.approx(0.02), "measurable": False}
    assert not eff["tied init"]["measurable"] and eff["tied init"]["delta"] == pytest.approx(0.01)
    assert eff["median b_pre"]["measurable"] and eff["median b_pre"]["delta"] == pytest.approx(0.44)
    # one seed: the spread is 0, so the tolerance alone decides
    one = {k: v[:1] for k, v in values.items()}
    assert controls.effects(one, tolerance=0.05)["median b_pre"]["measurable"]
    assert not controls.effects(one, tolerance=0.5)["median b_pre"]["measurable"]
    s = controls.summarise(values)
    assert s["no median b_pre"]["mean"] == pytest.approx(0.45) and s["no median b_pre"]["std"] == pytest.approx(0.05)
    assert s["no fixes"]["n"] == 3 and s["no fixes"]["std"] == 0.0


def test_plot_fix_controls_draws_every_seed():
    import matplotlib.pyplot as plt

    dead = {"all fixes": [0.0, 0.01], "no AuxK": [0.0, 0.0], "no tied init": [0.0, 0.02],
            "no median b_pre": [0.3, 0.4], "no fixes": [0.5, 0.45]}
    fig = sae.plots.plot_fix_controls(dead, {k: [1 - v[0], 1 - v[1]] for k, v in dead.items()}, 64, 1000)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(dead)
    assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= 10
    plt.close(fig)


def test_auxk_arm_differs_only_in_auxk():
    from course_lib.sae.controls import AUXK_OFF, AUXK_ON, auxk_arm
    from course_lib.sae.model import SAEConfig

    arm = auxk_arm(SAEConfig(d_in=8, n_latents=16, k=2), dead_tokens=64)
    on, off = arm[AUXK_ON], arm[AUXK_OFF]
    assert not on.tied_init and not on.median_init and on.dead_tokens == 64 and on.aux_coef > 0
    assert off == dataclasses.replace(on, aux_coef=0.0)
