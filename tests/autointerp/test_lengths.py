"""course_lib.autointerp.lengths: k-token explanations (unigram and bigram keys) fitted on the train records,
their two simulators, and r against k per kind."""

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


def test_unigram_explanations_keep_the_mean_activation_of_their_tokens():
    u = _unit("sae/0", "sae")
    assert lengths.fit_explanation(u, 1, weighted=True, bigrams=False) == {" def": 2.0}
    assert lengths.fit_explanation(u, 5, weighted=True, bigrams=False) == {" def": 2.0, " class": 1.0}
    assert abs(lengths.k_token_r(u, 2, weighted=True) - 1.0) < 1e-9  # weighted: exact
    assert lengths.k_token_r(u, 2, weighted=False) < 1.0  # binary: both tokens at 1
    assert lengths.k_token_r(u, 1, weighted=False) > 0.5


def _bigram_unit(name="sae/b", kind="sae"):
    """Fires 3.0 on " x" right after " (" and never on " x" elsewhere; " (" and " x" are both common."""
    def rec(i, strings, kind="top"):
        acts = [3.0 if j > 0 and s == " x" and strings[j - 1] == " (" else 0.0 for j, s in enumerate(strings)]
        return records.Record(i, kind, list(range(len(strings))), strings, acts)

    train = [rec(0, ["a", " (", " x", " x", " =", " x"]), rec(1, [" x", " (", " x", " y", " (", " z"]),
             rec(2, [" x", " x", " (", " x", " +", " x"])]
    test = [rec(3, [" x", " (", " x", " x", " (", " x"]), rec(4, [" (", " y", " x", " x", " (", " x"])]
    rnd = [rec(5, [" x", " =", " x", " (", " b", " x"], "random")]
    return records.UnitRecords(name, kind, 3.0, train, test, rnd)


def test_a_bigram_unit_is_recovered_by_a_bigram_key_and_not_by_unigrams():
    u = _bigram_unit()
    expl = lengths.fit_explanation(u, 2, weighted=True, bigrams=True)
    assert expl == {(" (", " x"): 3.0} and lengths.describe(expl) == '" x" after " ("'
    for weighted in (False, True):
        big = lengths.k_token_r(u, 2, weighted, bigrams=True)
        uni = lengths.k_token_r(u, 2, weighted, bigrams=False)
        assert abs(big - 1.0) < 1e-9 and uni < 0.6  # " x" alone fires in the wrong places
    assert lengths.fit_explanation(u, 1, weighted=True, bigrams=True) == lengths.fit_explanation(
        u, 1, weighted=True, bigrams=False)  # one token: no room for a bigram (it costs 2)
    assert lengths.simulate({(" (", " x"): 3.0, " x": 1.0}, u.test[:1], weighted=True) == [
        [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]]  # a bigram before a unigram; the first token has no bigram


def test_r_against_k_per_simulator_vocabulary_and_kind_and_its_figure():
    urs = [_unit(f"sae/{i}", "sae") for i in range(3)] + [_unit(f"random/{i}", "random") for i in range(3)]
    urs += [_bigram_unit(f"neuron/{i}", "neuron") for i in range(3)]
    t = lengths.r_against_k(urs, ks=(1, 3))
    assert set(t) == {"binary", "weighted"} and set(t["binary"]) == {"unigram", "bigram"}
    assert t["weighted"]["unigram"]["sae"][3]["n"] == 3
    assert t["binary"]["bigram"]["neuron"][3]["mean"] > t["binary"]["unigram"]["neuron"][3]["mean"] + 0.3
    md = lengths.lengths_markdown(t, k_focus=1)
    assert "k = 1" in md and "Bigram minus unigram mean r at k = 3: sae +0.00" in md and "neuron +" in md
    fig = plots.plot_r_against_k(t)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("description length")
    styles = {line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert {"-", "--"} <= styles
