"""course_lib.autointerp.lengths: the k-token explanation, its two simulators, and r against k per kind."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from course_lib.autointerp import lengths, plots, records  # noqa: E402


def _unit(name, kind, strong=" def", weak=" class"):
    train = [records.Record(0, "top", [1, 2, 3], ["x", strong, weak], [0.0, 2.0, 1.0]),
             records.Record(1, "top", [1, 2, 3], [strong, "y", weak], [2.0, 0.0, 1.0])]
    test = [records.Record(2, "top", [1, 2, 3], [strong, weak, "z"], [2.0, 1.0, 0.0])]
    rnd = [records.Record(3, "random", [4, 5], ["a", weak], [0.0, 1.0])]
    return records.UnitRecords(name, kind, 2.0, train, test, rnd)


def test_weights_are_mean_activations_of_the_heaviest_tokens():
    u = _unit("sae/0", "sae")
    assert lengths.token_weights(u, 1) == {" def": 2.0}
    assert lengths.token_weights(u, 5) == {" def": 2.0, " class": 1.0}
    assert abs(lengths.k_token_r(u, 2, weighted=True) - 1.0) < 1e-9  # weighted: exact
    assert lengths.k_token_r(u, 2, weighted=False) < 1.0  # binary: both tokens at 1
    assert lengths.k_token_r(u, 1, weighted=False) > 0.5


def test_r_against_k_per_kind_and_its_figure():
    urs = [_unit(f"sae/{i}", "sae") for i in range(3)] + [_unit(f"random/{i}", "random") for i in range(3)]
    t = lengths.r_against_k(urs, ks=(1, 3))
    assert set(t) == {"binary", "weighted"} and t["weighted"]["sae"][3]["n"] == 3
    assert "k = 1" in lengths.lengths_markdown(t, k_focus=1)
    fig = plots.plot_r_against_k(t)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("tokens")
