"""Notebook 04's "explain it yourself" explorer: type an explanation, score it like the model's (:mod:`course_lib.explorer`)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from typing import Any

from course_lib.autointerp.pipeline import Scorers, explain_text
from course_lib.autointerp.plots import records_html
from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.results import SCORE_KEYS, Result
from course_lib.explorer import Explorer, view_widgets


class ExplainExplorer(Explorer):
    """Pick a unit, read its train records, type an explanation, score it against the model's own.

    A press of Score runs the cheap scorers (:meth:`Scorers.live`: keyword simulator and embedding,
    well under a second); the "all scorers" box adds the LM's all-at-once simulation, detection and
    fuzzing (three batched forwards, several seconds), shown as "-" otherwise. The test records are
    drawn with the LM's simulation when it ran, else with the keyword simulator's. ``rescore`` (e.g.
    :func:`~course_lib.autointerp.pipeline.rescore` with notebook 04's learner's metric functions)
    recomputes the scores of each typed explanation. With ``gates`` (:func:`~.results.sanity_gates`) only
    the scorers that passed their gates are shown; the others are named as excluded.
    """

    def __init__(self, unit_records: Mapping[str, UnitRecords], scorers: Scorers, reference: Mapping[str, Result],
                 reference_name: str, text: str = 'the token "("', all_scorers: bool = False,
                 rescore: Callable[[Result], Result] | None = None,
                 gates: Mapping[str, Mapping[str, Any]] | None = None):
        self.units, self.scorers, self.all_scorers, self.rescore = unit_records, scorers, all_scorers, rescore
        self.gates = gates
        self.reference, self.reference_name = reference, reference_name
        self.unit, self.text = next(iter(unit_records)), text
        self.render_scores(self.unit, text)

    def records_view(self, unit: str) -> str:
        return f"<b>{html.escape(unit)}</b> train records:" + records_html(self.units[unit])

    def render_scores(self, unit: str, text: str) -> None:
        self.unit, self.text = unit, text
        ur = self.units[unit]
        scorers = self.scorers if self.all_scorers else self.scorers.live()
        mine = scorers.score(explain_text(text, unit), ur)
        if self.rescore is not None:
            mine = self.rescore(mine)
        theirs = self.reference.get(unit)

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        keys = list(SCORE_KEYS) if self.gates is None else [k for k in self.gates if self.gates[k].get("pass")]
        excluded = [] if self.gates is None else [k for k in self.gates if not self.gates[k].get("pass")]
        rows = "".join(
            f"<tr><td>{k}</td><td>{fmt(mine.scores.get(k))}</td>"
            f"<td>{fmt(None if theirs is None else theirs.scores.get(k))}</td></tr>" for k in keys)
        if excluded:
            rows += (f"<tr><td colspan=3><small>not shown, failed their gates in this run: "
                     f"{html.escape(', '.join(excluded))}</small></td></tr>")
        yours = html.escape(mine.explanation) if mine.explanation else f"[missing: {mine.reason}]"
        ref = html.escape(theirs.explanation) if theirs is not None and theirs.explanation else "-"
        self.html = (self.records_view(unit)
                     + f"<p>you: <i>{yours}</i><br>{html.escape(self.reference_name)}: <i>{ref}</i></p>"
                     f"<table><tr><th>score</th><th>you</th><th>{html.escape(self.reference_name)}</th></tr>{rows}</table>"
                     f"test records with your simulation ({'LM' if 'simulated' in mine.extra else 'keyword'} simulator):"
                     + records_html(ur, mine.extra.get("simulated") or mine.extra.get("simulated_keyword"), which="test"))

    def build(self) -> Any:
        import ipywidgets as W

        pick = W.Dropdown(options=list(self.units), value=self.unit, description="unit")
        text = W.Text(value=self.text, description="find ...", layout=W.Layout(width="70%"))
        button = W.Button(description="Score", button_style="primary")
        every = W.Checkbox(value=self.all_scorers, description="all scorers (+ LM simulation, detection, fuzzing: slower)",
                           indent=False)
        status = W.HTML()
        html_w, img_w = view_widgets(self)

        def on_unit(change: Any) -> None:  # records at once; scores on demand
            html_w.value = self.records_view(change["new"]) + "<p><i>press Score to score your explanation</i></p>"

        def on_score(*_: object) -> None:
            status.value = "<i>scoring...</i>"
            button.disabled = True
            try:
                start = time.perf_counter()
                self.all_scorers = every.value
                self.render_scores(pick.value, text.value)
                html_w.value = self.html
                status.value = f"<small>scored in {time.perf_counter() - start:.1f} s</small>"
            finally:
                button.disabled = False

        pick.observe(on_unit, names="value")
        button.on_click(on_score)
        return W.VBox([W.HBox([pick, button, status]), W.HBox([text, every]), html_w])


def explain_explorer(unit_records: Mapping[str, UnitRecords], scorers: Scorers, reference: Mapping[str, Result],
                     reference_name: str, text: str = 'the token "("', all_scorers: bool = False,
                     rescore: Callable[[Result], Result] | None = None,
                     gates: Mapping[str, Mapping[str, Any]] | None = None) -> ExplainExplorer:
    """Notebook 04's "explain it yourself" explorer (see :class:`ExplainExplorer`)."""
    return ExplainExplorer(unit_records, scorers, reference, reference_name, text, all_scorers, rescore, gates)
