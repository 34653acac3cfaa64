"""Notebook 05's side-by-side explorer: a dense neuron, a sparse unit and an SAE latent of one matched pair
(:mod:`course_lib.explorer`: live controls in JupyterLab, the first view as static HTML when headless)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from course_lib.autointerp.plots import records_html
from course_lib.autointerp.records import UnitRecords
from course_lib.capstone.explain import LABELS, SCORERS, UnitScore
from course_lib.capstone.study import PairStudy
from course_lib.explorer import Explorer, view_widgets

SPARSE_CLASSES = ("sparse neuron", "sparse channel")  # which sparse unit the middle column shows
RANKS = ("best", "median", "worst")  # which unit of each class, by its own keyword-simulator r
N_SHOWN = 3  # records shown per list and column


class UnitsExplorer(Explorer):
    """Three columns for one pair: the dense neuron, the sparse unit (neuron or channel) and the SAE latent at the
    same rank of their class (best, median or worst by keyword r): the explainer's top contexts (selection split),
    the statistics explanation, and each scorer that passed its gate with the unit's own explanation and with
    another unit's; the scored top records (scoring split) below."""

    def __init__(self, studies: Sequence[PairStudy], scores: Sequence[UnitScore], gates: Mapping[str, Mapping[str, Any]]):
        self.studies = {s.pair.label: s for s in studies}
        self.scores = scores
        self.keys = [k for k in SCORERS if gates.get(k, {}).get("pass")]
        self.failed = [k for k in SCORERS if not gates.get(k, {}).get("pass")]
        self.pair, self.sparse_cls, self.rank = next(iter(self.studies)), SPARSE_CLASSES[0], RANKS[0]
        self.render(self.pair, self.sparse_cls, self.rank)

    def pick(self, study: PairStudy, cls: str, rank: str) -> tuple[UnitScore, UnitRecords] | None:
        """The unit of ``cls`` at ``rank`` in ``study`` (by own keyword r; units without one last)."""
        rows = sorted((r for r in self.scores if r.cls == cls and r.pair == study.pair.label),
                      key=lambda r: -(r.own.get("keyword_r") if r.own.get("keyword_r") is not None else -9.0))
        if not rows:
            return None
        r = rows[{"best": 0, "median": len(rows) // 2, "worst": len(rows) - 1}[rank]]
        ur = next(u for u in study.records if u.unit == r.unit)
        return r, ur

    def column(self, got: tuple[UnitScore, UnitRecords] | None, cls: str) -> str:
        if got is None:
            return f"<td style='vertical-align:top;width:33%'><b>{html.escape(cls)}</b>: none</td>"
        r, ur = got

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        rows = "".join(f"<tr><td>{html.escape(LABELS[k])}</td><td>{fmt(r.own.get(k))}</td><td>{fmt(r.other.get(k))}</td></tr>"
                       for k in self.keys)
        return (f"<td style='vertical-align:top;width:33%'><b>{html.escape(cls)}</b><br><small>{html.escape(r.unit)}</small>"
                f"<p>explanation: <i>{html.escape(r.explanation or '[none: no activating record]')}</i></p>"
                f"<table><tr><th>score</th><th>own</th><th>another unit's</th></tr>{rows}</table>"
                f"<p><small>top contexts (what the explainer read, the first {N_SHOWN}):</small></p>"
                f"<div style='overflow-x:auto'>{records_html(UnitRecordsView.first(ur, N_SHOWN))}</div>"
                f"<p><small>scored top records (held-out split, the first {N_SHOWN}):</small></p>"
                f"<div style='overflow-x:auto'>{records_html(UnitRecordsView.top(ur, N_SHOWN), which='test')}</div></td>")

    def render(self, pair: str, sparse_cls: str, rank: str) -> None:
        self.pair, self.sparse_cls, self.rank = pair, sparse_cls, rank
        st = self.studies[pair]
        cols = "".join(self.column(self.pick(st, c, rank), c) for c in ("dense neuron", sparse_cls, "sae latent"))
        note = (f"<p><small>not shown, failed their gates in this run: {html.escape(', '.join(self.failed))}</small></p>"
                if self.failed else "")
        p = st.pair
        self.html = (f"<p><b>{html.escape(p.label)}</b>: {html.escape(p.sparse)} (loss {p.sparse_loss:.3f}) vs "
                     f"{html.escape(p.dense)} (loss {p.dense_loss:.3f}); the {rank} unit of each class by its own "
                     f"keyword-simulator r</p><table style='width:100%;table-layout:fixed'><tr>{cols}</tr></table>{note}")

    def build(self) -> Any:
        import ipywidgets as W

        pair = W.Dropdown(options=list(self.studies), value=self.pair, description="pair")
        sparse = W.Dropdown(options=list(SPARSE_CLASSES), value=self.sparse_cls, description="sparse unit")
        rank = W.ToggleButtons(options=list(RANKS), value=self.rank, description="rank")
        html_w, _ = view_widgets(self)

        def update(*_: object) -> None:
            self.render(pair.value, sparse.value, rank.value)
            html_w.value = self.html

        for w in (pair, sparse, rank):
            w.observe(update, names="value")
        return W.VBox([W.HBox([pair, sparse]), rank, html_w])


class UnitRecordsView:
    """Views of a unit's records for display."""

    @staticmethod
    def top(ur: UnitRecords, n: int) -> UnitRecords:
        """The same unit with only its first ``n`` top test records."""
        return UnitRecords(ur.unit, ur.kind, ur.max_act, ur.train, ur.test_top[:n], [])

    @staticmethod
    def first(ur: UnitRecords, n: int) -> UnitRecords:
        """The same unit with only its first ``n`` train records (the strongest)."""
        return UnitRecords(ur.unit, ur.kind, ur.max_act, ur.train[:n], ur.test_top, ur.test_random)


def units_explorer(studies: Sequence[PairStudy], scores: Sequence[UnitScore], gates: Mapping[str, Mapping[str, Any]]
                   ) -> UnitsExplorer:
    """Notebook 05's side-by-side explorer (:class:`UnitsExplorer`): ``scores`` from
    :func:`course_lib.capstone.explain.score_units` over the studies' records."""
    return UnitsExplorer(studies, scores, gates)
