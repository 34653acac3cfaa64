"""Notebook 05's parameter checks, sizes, report prose and metrics (every number in its prose comes from the run).

The prose functions take the run's measurements and return Markdown; none of them computes anything the
notebook does not show elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from course_lib import runtime
from course_lib.autointerp.records import RecordConfig
from course_lib.capstone import compare
from course_lib.capstone.activity import STATS
from course_lib.capstone.circuit_view import CircuitUnits
from course_lib.capstone.dictionary import DictionaryConfig
from course_lib.capstone.explain import CHANCE, LABELS, SCORERS
from course_lib.capstone.matching import MatchedPair
from course_lib.capstone.study import StudyConfig
from course_lib.runtime import Headline

REFERENCE_FRACTIONS: tuple[float, ...] = (0.4, 0.2, 0.1, 0.05, 0.04, 0.02)  # the sparse groups of 02's shipped set
UNITS_MAX = 256  # the largest UNITS_PER_CLASS accepted (a width-16 model has 16 channels: fewer are used there)
TASKS_MAX = 7  # 02's suite
# the comparisons, each (a, b) read as a - b; the last three are the nulls beside them: random directions of the
# two models against each other, and each model's channels against random directions of the same stream (is the
# basis privileged?)
COMPARISONS: tuple[tuple[str, str], ...] = (("sparse neuron", "dense neuron"), ("sparse channel", "dense channel"),
                                            ("sparse neuron", "sae latent"), ("sparse channel", "sae latent"),
                                            ("sae latent", "dense neuron"), ("sparse random", "dense random"),
                                            ("sparse channel", "sparse random"), ("dense channel", "dense random"))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Notebook 05's validated parameters and the sizes of the run's profile."""

    use_reference_solutions: bool  # True: every exercise runs on the library solution, announced per exercise
    fractions: tuple[float, ...]  # kept fractions compared (02's sparse groups)
    seeds: tuple[int, ...]  # training seeds of the reference models used (one matched pair per fraction and seed)
    n_windows: int  # windows of 64 tokens per split (selection, scoring; the SAE's training text: twice as many)
    study: StudyConfig  # units per class, records per unit, the SAE
    circuit_tasks: int  # tasks per pair in the circuit view (0: skipped)
    circuit_pairs: int  # pairs in the circuit view (seed-0 pairs, densest fractions first)
    n_boot: int  # bootstrap draws of every interval


def settings(run: runtime.Run, use_reference_solutions: object, fractions: object, units_per_class: object,
             circuit_tasks: object) -> Settings:
    """Validate notebook 05's own parameters and derive the sizes of ``run.profile``.

    ``FRACTIONS`` is ``"auto"`` (smoke: 0.4; workshop: 0.4, 0.2, 0.1; full: every one) or a non-empty list of
    kept fractions of 02's reference set (:data:`REFERENCE_FRACTIONS`); ``UNITS_PER_CLASS`` an int in
    ``[0, UNITS_MAX]`` (0: the profile's default); ``CIRCUIT_TASKS`` an int in ``[-1, TASKS_MAX]`` (-1: the profile's
    default, 0: no circuit view). Raises :class:`runtime.ParameterError` naming the valid values."""
    runtime.check_type("USE_REFERENCE_SOLUTIONS", use_reference_solutions, bool)
    if isinstance(fractions, str):
        runtime.check_choice("FRACTIONS", fractions, ("auto",))
        fr = run.pick(smoke=(0.4,), workshop=(0.4, 0.2, 0.1), full=REFERENCE_FRACTIONS)
    else:
        if not isinstance(fractions, (list, tuple)) or not fractions:
            raise runtime.ParameterError(f"FRACTIONS={fractions!r}; valid values: 'auto' or a non-empty list drawn "
                                         f"from {list(REFERENCE_FRACTIONS)}")
        for f in fractions:
            runtime.check_choice("FRACTIONS entry", f, REFERENCE_FRACTIONS)
        fr = tuple(sorted({float(f) for f in fractions}, reverse=True))
    runtime.check_type("UNITS_PER_CLASS", units_per_class, int)
    runtime.check_range("UNITS_PER_CLASS", units_per_class, 0, UNITS_MAX)  # type: ignore[arg-type]
    runtime.check_type("CIRCUIT_TASKS", circuit_tasks, int)
    runtime.check_range("CIRCUIT_TASKS", circuit_tasks, -1, TASKS_MAX)  # type: ignore[arg-type]
    n_units = int(units_per_class) or run.pick(smoke=6, workshop=16, full=64)  # type: ignore[call-overload]
    tasks = int(circuit_tasks) if int(circuit_tasks) >= 0 else run.pick(smoke=1, workshop=2, full=7)  # type: ignore[call-overload]
    sae = DictionaryConfig(n_tokens=run.pick(smoke=20_000, workshop=100_000, full=600_000), seed=run.seed)
    study = StudyConfig(n_units=n_units, sae=sae,
                        rec=RecordConfig(n_train=6, n_test_top=5, n_test_random=5, n_test_quantile=5))
    return Settings(bool(use_reference_solutions), fr, run.pick(smoke=(0,), workshop=(0, 1, 2), full=(0, 1, 2)),
                    run.pick(smoke=96, workshop=256, full=1024), study, tasks,
                    run.pick(smoke=1, workshop=len(fr), full=len(fr)), run.pick(smoke=100, workshop=1000, full=2000))


def settings_text(s: Settings, profile: str) -> str:
    return (f"profile {profile}: kept fractions {list(s.fractions)}, seeds {list(s.seeds)} "
            f"({len(s.fractions) * len(s.seeds)} matched pairs); {s.study.n_units} units per class and model; "
            f"{s.n_windows} windows per split; SAE: {s.study.sae.expansion}x latents, k={s.study.sae.k}, "
            f"{s.study.sae.n_tokens:,} training tokens; circuit view: {s.circuit_tasks} task(s) on "
            f"{s.circuit_pairs} pair(s); {s.n_boot} bootstrap draws")


def _ci(v: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not v or v.get("mean", v.get("diff")) is None:
        return "n/a"
    m = v.get("mean", v.get("diff"))
    ci = v.get("ci95")
    return f"{m:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def pairs_markdown(pairs: Sequence[MatchedPair]) -> str:
    """The matched pairs as a table, and the loss gaps in words."""
    rows = ["| pair | sparse model | loss | dense model | loss | gap |", "|---|---|---|---|---|---|"]
    for p in pairs:
        rows.append(f"| {p.label} | {p.sparse} | {p.sparse_loss:.3f} | {p.dense} | {p.dense_loss:.3f} | {p.gap:+.3f} |")
    gaps = [p.gap for p in pairs]
    flagged = [p.label for p in pairs if not p.at_least_as_capable]
    text = (f"\n\nEvery dense partner is at least as capable as its sparse model (gaps from {min(gaps):.3f} to "
            f"{max(gaps):.3f} nats/token): the dense side is never the less capable one. The set has no dense width "
            "between the two, so the larger gaps are as close as 02's rule allows; read a pair with a large gap as "
            "matched only loosely."
            if not flagged else f"\n\n{', '.join(flagged)}: no dense width reaches the sparse model's loss; paired "
            "with the most capable width.")
    widths = sorted({(p.fraction, p.dense_width, p.sparse_width) for p in pairs}, reverse=True)
    text += " Widths (kept fraction: dense / sparse d_model): " + "; ".join(
        f"{f:g}: {d} / {s}" for f, d, s in widths) + "."
    return "\n".join(rows) + text


def sae_markdown(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """The SAEs' quality per dense model (held-out NMSE, L0, dead fraction)."""
    nm = [v["nmse"] for v in stats.values()]
    dead = [v["dead_fraction"] for v in stats.values()]
    first = next(iter(stats.values()))
    return (f"**The SAEs** ({len(stats)}, one per dense model; {first['n_latents']} latents for the first, "
            f"k = {first['k']}): held-out NMSE from {min(nm):.3f} to {max(nm):.3f} (the share of the channels' "
            f"variance they miss), dead latents from {min(dead):.1%} to {max(dead):.1%}.")


def gates_markdown(gates: Mapping[str, Mapping[str, Any]]) -> str:
    """Which scorers passed: own explanation minus another unit's, mean and interval over every unit."""
    lines = ["**Gates** (own explanation minus another unit's of the same class, same records, every unit):"]
    for k in SCORERS:
        g = gates[k]
        lines.append(f"* {LABELS[k]}: {_ci(g, 3)} over {g['n']} units: "
                     + ("**passed**" if g["pass"] else "**failed**: not used below"))
    worst = [(k, c, v) for k in SCORERS for c, v in gates[k]["by_class"].items() if v["ci95"] and v["ci95"][0] <= 0]
    if worst:
        lines.append("Classes where the own explanation does not beat another unit's by a resolved margin: "
                     + "; ".join(f"{c} ({k})" for k, c, _ in worst) + ".")
    return "\n".join(lines)


def differences(rows: Sequence[Any], key: str, fractions: Sequence[float], n_boot: int, seed: int,
                comparisons: Sequence[tuple[str, str]] = COMPARISONS, attr: str | None = None
                ) -> dict[str, dict[str, Any]]:
    """``{"a - b": {"all": paired_difference, "f=0.4": ..., ...}}`` of ``key`` (a score of ``.own``, or with
    ``attr`` an attribute of an activity row)."""
    def value(r: Any) -> float | None:
        return getattr(r, attr) if attr else r.own.get(key)

    out = {}
    for a, b in comparisons:
        row = {"all": compare.paired_difference(rows, value, a, b, None, n_boot, seed)}
        if len(fractions) > 1:
            for f in fractions:
                row[f"f={f:g}"] = compare.paired_difference(rows, value, a, b, f, n_boot, seed)
        out[f"{a} - {b}"] = row
    return out


def _seed_spread(d: Mapping[str, Any]) -> str:
    v = list(d.get("per_pair", {}).values())
    if len(v) < 2:
        return ""
    return f"; per pair from {min(v):+.3f} to {max(v):+.3f} ({sum(x > 0 for x in v)} of {len(v)} above 0)"


def scores_markdown(means: Mapping[str, Mapping[str, Any]], diffs: Mapping[str, Mapping[str, Any]], key: str,
                    scores: Sequence[Any]) -> str:
    """Class means of one scorer, with the null of another unit's explanation beside each, then the differences."""
    other = {c: float(np.mean(v)) for c in means
             if (v := [r.other[key] for r in scores if r.cls == c and r.other.get(key) is not None])}
    lines = [f"**{LABELS[key]}**, class means over pairs [95% interval over units and seeds] "
             f"(beside each: another unit's explanation on the same units; chance {CHANCE[key]:g}):"]
    for c, m in means.items():
        lines.append(f"* {c}: {_ci(m, 3)}; another unit's explanation {other.get(c, float('nan')):.3f}")
    lines.append("\nPaired differences (a - b, [95% interval]), all pairs, then each kept fraction:")
    for name, per in diffs.items():
        parts = [f"{g} {compare.verdict(d)}" for g, d in per.items()]
        lines.append(f"* **{name}**: " + "; ".join(parts) + _seed_spread(per["all"]))
    return "\n".join(lines)


def lengths_markdown(table: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Any]]]], k_focus: int = 3) -> str:
    """Each class's mean r at ``k_focus`` tokens and at the largest k, per simulator."""
    lines = []
    for sim, per_kind in table.items():
        ks = sorted(next(iter(per_kind.values())))
        kmax = ks[-1]
        cells = [f"{c} {_ci(per_kind[c][k_focus])} → {_ci(per_kind[c][kmax])}" for c in per_kind]
        lines.append(f"* **{sim}** (k = {k_focus} → k = {kmax}): " + "; ".join(cells))
    return "\n".join(lines)


def activity_markdown(means: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      diffs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Per statistic: class means, then the sparse - dense differences."""
    lines = []
    for stat in STATS:
        lines.append(f"**{stat.replace('_', ' ')}**: " + "; ".join(f"{c} {_ci(m, 3)}" for c, m in means[stat].items()))
        lines.append("  " + "; ".join(f"{n}: {compare.verdict(per['all'])}" for n, per in diffs[stat].items()))
    return "\n\n".join(lines)


def circuits_markdown(rows: Sequence[CircuitUnits], summary: Mapping[str, Mapping[str, Any]],
                      thresholds: Mapping[str, float], unsolved: Mapping[str, Sequence[str]]) -> str:
    """The circuit view in words."""
    if not rows:
        return ("No circuit was measured in this run (CIRCUIT_TASKS = 0, or no task is solved by both models of a "
                "pair with a held-out-valid circuit).")
    lines = ["| pair | task | model | circuit nodes | units at the 2 sites | explained |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.pair} | {r.task} | {r.side} | {r.n_nodes} | {r.n_units} | {r.n_explained} |")
    d, s = summary["dense"], summary["sparse"]

    def share(v: Mapping[str, Any]) -> str:
        return "n/a" if v["share"] is None else f"{v['share']:.0%}"

    lines.append(f"\nPooled: dense circuits keep on average {d['units'] or 0:.1f} units at the two sites, of which "
                 f"{share(d)} are explained; sparse circuits {s['units'] or 0:.1f}, {share(s)} explained. "
                 "Thresholds (95th percentile of another unit's explanation): "
                 + ", ".join(f"{c} {t:.2f}" for c, t in thresholds.items() if "random" not in c and "sae" not in c)
                 + ".")
    if any(unsolved.values()):
        lines.append("Pairs where no task was solved by both models: "
                     + ", ".join(p for p, ts in unsolved.items() if ts) + ".")
    lines.append("\nScope: one pair per kept fraction (seed 0), the first tasks both models solve, units at "
                 "neurons and read channels only; a unit counts as explained against thresholds measured on "
                 "last-block units. With a handful of circuits this is a reading, not a test.")
    return "\n".join(lines)


def toy_result(out_dir: Path) -> dict[str, float] | None:
    """Notebook 01's features per neuron, densest and sparsest kept fraction, from its metrics.json beside
    ``out_dir`` (None when notebook 01 has not run there)."""
    path = Path(out_dir).parent / "01_superposition_toy_models" / "metrics.json"
    try:
        rows = json.loads(path.read_text())["weight_sparse_comparison"]
        return {"dense_fraction": rows[0]["kept_fraction"], "dense": rows[0]["features_per_neuron"],
                "sparse_fraction": rows[-1]["kept_fraction"], "sparse": rows[-1]["features_per_neuron"]}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def primary_scorer(gates: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The scorer the conclusions use: the first of :data:`SCORERS` that passed its gate."""
    return next((k for k in SCORERS if gates[k]["pass"]), None)


def _word(d: Mapping[str, Any]) -> str:
    v = compare.verdict(d)
    return v.rsplit(": ", 1)[-1]


def conclusion_markdown(key: str | None, diffs: Mapping[str, Mapping[str, Any]], means: Mapping[str, Any],
                        act_diffs: Mapping[str, Mapping[str, Any]], circuit_summary: Mapping[str, Any] | None,
                        toy: Mapping[str, float] | None, pairs: Sequence[MatchedPair]) -> str:
    """The answer the run finds, with the nulls beside it, and how it compares with 01 and the papers."""
    if key is None:
        return ("**No answer in this run:** no offline scorer passed its gate (a unit's own explanation did not beat "
                "another unit's), so no score here can separate explainable from unexplainable units.")
    n, c = diffs["sparse neuron - dense neuron"]["all"], diffs["sparse channel - dense channel"]["all"]
    sae_n, sae_c = diffs["sparse neuron - sae latent"]["all"], diffs["sparse channel - sae latent"]["all"]
    rnd = diffs["sparse random - dense random"]["all"]
    words = {"higher": "more explainable", "lower": "less explainable",
             "no difference resolved": "no difference resolved at this scale"}
    n_pairs = len(pairs)
    widths = sorted({w for p in pairs for w in (p.dense_width, p.sparse_width)})
    fr = sorted({p.fraction for p in pairs})
    lines = [f"**The answer this run finds** ({LABELS[key]}, {n_pairs} matched pairs):",
             f"* sparse neurons vs dense neurons: {compare.verdict(n)} → **{words.get(_word(n), _word(n))}**;",
             f"* sparse channels vs dense channels: {compare.verdict(c)} → **{words.get(_word(c), _word(c))}**;",
             f"* sparse neurons vs SAE latents on the dense model: {compare.verdict(sae_n)}; sparse channels vs SAE "
             f"latents: {compare.verdict(sae_c)};",
             f"* the null beside them: random directions, sparse vs dense model: {compare.verdict(rnd)} (a "
             "difference here is the residual stream's, not the basis's: subtract it before crediting the basis); "
             f"random directions score {_ci(means['sparse random'])} in sparse and {_ci(means['dense random'])} in "
             "dense models, against the chance level "
             f"{CHANCE[key]:g}; another unit's explanation is the per-class null in the figure and the table above;",
             "* is the residual basis privileged? channels minus random directions of the same stream: sparse "
             f"{compare.verdict(diffs['sparse channel - sparse random']['all'])}; dense "
             f"{compare.verdict(diffs['dense channel - dense random']['all'])}."]
    tt = act_diffs["top_token_share"]
    lines.append(f"* without language, the share of a unit's mass on its top token: sparse - dense neurons "
                 f"{compare.verdict(tt['sparse neuron - dense neuron']['all'])}; channels "
                 f"{compare.verdict(tt['sparse channel - dense channel']['all'])}.")
    if circuit_summary:
        d, s = circuit_summary["dense"], circuit_summary["sparse"]
        if d["share"] is not None and s["share"] is not None:
            lines.append(f"* task circuits (scoped reading): {s['share']:.0%} of sparse circuits' units explained vs "
                         f"{d['share']:.0%} of dense circuits'.")
    toy_line = ("Notebook 01's toy model measures how many features each hidden dimension carries as weight sparsity "
                "rises (it has not run beside this notebook: run it to see its numbers here)" if toy is None
                else f"In notebook 01's toy model weight sparsity acted on superposition directly: features per neuron "
                     f"went from {toy['dense']:g} (kept fraction {toy['dense_fraction']:g}) to {toy['sparse']:g} (kept "
                     f"fraction {toy['sparse_fraction']:g})")
    lines.append(
        f"\n**Against 01 and the papers.** {toy_line}. Here, in transformers trained on real text, the question is "
        "whether that reaches the units an explainer reads. Gao et al. (2025) report that weight-sparse "
        "transformers' units, read inside small task circuits, are often single concepts, at ~1/1000 of the weights kept, much wider and longer-trained models, "
        "and by hand inspection of circuits; Bills et al. (2023) and Gao et al. (2024) find SAE latents more "
        "explainable than neurons by simulation scores. This run asks the same question with one automatic, "
        f"offline explainer on two-layer models of width {widths[0]} to {widths[-1]}, the sparse ones keeping "
        f"{fr[0]:.0%} to {fr[-1]:.0%} of their weights: read each line above against its interval and its null, and "
        "against the scale: a difference the papers find at 1/1000 of the weights and width 2048 need not show "
        "here, and its absence here does not contradict them.")
    return "\n".join(lines)


def headline(key: str | None, gates: Mapping[str, Mapping[str, Any]], diffs: Mapping[str, Mapping[str, Any]],
             means: Mapping[str, Any], n_pairs: int) -> list[Headline]:
    """Notebook 05's headline claims for the report: sparse - dense (neurons, channels) and sparse - SAE, on the
    first scorer that passed its gate, each with the random-direction null in its note."""
    if key is None:
        return [Headline("weight-sparse units vs dense neurons vs SAE latents: explanation scores at matched loss",
                         "weight-sparse units more interpretable (Gao et al. 2025)", None, None, False,
                         "no offline scorer passed its gate (own explanation vs another unit's)")]
    rnd = diffs["sparse random - dense random"]["all"]
    note = (f"{LABELS[key]}; {n_pairs} matched pairs; null: random directions sparse - dense {compare.verdict(rnd)}, "
            f"random directions score {_ci(means['sparse random'])} (sparse) / {_ci(means['dense random'])} (dense)")
    out = []
    for name, claim, paper in (
            ("sparse neuron - dense neuron", "sparse - dense MLP neurons: explanation score at matched loss",
             "weight-sparse units more interpretable (Gao et al. 2025, by inspection of circuits)"),
            ("sparse channel - dense channel", "sparse - dense residual channels: explanation score at matched loss",
             "weight-sparse units more interpretable (Gao et al. 2025)"),
            ("sparse channel - sae latent", "sparse residual channels - SAE latents on the dense model's channels",
             "SAE latents more explainable than neurons (Bills et al. 2023 style scores; Gao et al. 2024)")):
        d = diffs[name]["all"]
        ci = d.get("ci95")
        out.append(Headline(claim, paper, None if d["diff"] is None else f"{d['diff']:+.3f} ({_word(d)})",
                            None if not ci else f"95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}] over units and seeds",
                            bool(gates[key]["pass"]), note))
    return out
