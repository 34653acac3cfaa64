"""Notebook 02's explorer: a circuit's wiring, nodes switched off, the task loss (:mod:`course_lib.explorer`)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import torch

from course_lib.circuits.plots import node_label, plot_wiring
from course_lib.circuits.pruning import node_sites, task_loss
from course_lib.explorer import Explorer, fig_png, first_view, set_view, view_widgets


class CircuitExplorer(Explorer):
    """Pick a model and one of its tasks (``results[model]`` holds the circuits it has), see the circuit's wiring,
    switch nodes off and watch the held-out task loss. Every kept node is listed."""

    def __init__(self, models: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
                 data: Mapping[str, Any], means: Mapping[str, Mapping[str, torch.Tensor]],
                 notes: Mapping[str, Mapping[tuple[str, int], str]] | None = None):
        self.models, self.results, self.data, self.means = models, results, data, means
        self.notes = notes or {}
        first = next(iter(results))
        first_view(self, (models, results, data, means, notes), (),
                   lambda: self.render(first, next(iter(results[first])), ()))

    def node_options(self, name: str, task: str) -> list[tuple[str, tuple[str, int]]]:
        """Every kept node of the circuit as ``(label, (hook, channel))``."""
        c = self.results[name][task]
        sites = {s.hook: s for s in node_sites(self.models[name])}
        notes = self.notes.get(name, {})
        out = []
        for h, ch in c.kept_nodes:
            label = node_label(sites[h], ch, self.models[name].cfg.d_head)
            if (h, ch) in notes:
                label += " | " + notes[(h, ch)]
            out.append((label, (h, ch)))
        return out

    def render(self, name: str, task: str, off: tuple[tuple[str, int], ...]) -> None:
        model, c = self.models[name], self.results[name][task]
        masks = {h: m.float() for h, m in c.kept.items()}
        for h, ch in off:
            masks[h] = masks[h].clone()
            masks[h][ch] = 0.0
        loss = task_loss(model, self.data[task], masks, self.means[name])
        kept_n = sum(int(m.sum()) for m in c.kept.values())
        size = f"{c.edges} edges" if c.valid else "no held-out-valid circuit, best set shown"
        self.html = (f"<p><b>{html.escape(task)}</b> in <b>{html.escape(name)}</b>: circuit {kept_n} nodes, "
                     f"{size}; switched off {len(off)} -> task loss <b>{loss:.3f}</b> on held-out prompts "
                     f"(circuit {c.test_loss:.3f}, full model {c.full_loss:.3f}, chance 0.693)</p>")
        self.png = fig_png(plot_wiring(model, c, self.notes.get(name), max_nodes=40, data=self.data[task]))

    def build(self) -> Any:
        import ipywidgets as W

        model_dd = W.Dropdown(options=list(self.results), description="model")
        task_dd = W.Dropdown(options=list(self.results[model_dd.value]), description="task")
        nodes_sel = W.SelectMultiple(options=[], rows=12, description="switch off", layout=W.Layout(width="380px"))
        html_w, img_w = view_widgets(self)
        busy = [False]

        def update(*_: object) -> None:
            if not busy[0]:
                self.render(model_dd.value, task_dd.value, tuple(nodes_sel.value))
                set_view(self, html_w, img_w)

        def on_model(*_: object) -> None:
            busy[0] = True  # the model's own tasks (a model has circuits for the tasks it solves)
            task_dd.options = list(self.results[model_dd.value])
            busy[0] = False
            on_pick()

        def on_pick(*_: object) -> None:
            busy[0] = True
            nodes_sel.options = self.node_options(model_dd.value, task_dd.value)
            nodes_sel.value = ()
            busy[0] = False
            update()

        model_dd.observe(on_model, names="value")
        task_dd.observe(on_pick, names="value")
        nodes_sel.observe(update, names="value")
        nodes_sel.options = self.node_options(model_dd.value, task_dd.value)
        return W.VBox([W.HBox([model_dd, task_dd]), nodes_sel, html_w, img_w])


def circuit_explorer(models: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any],
                     means: Mapping[str, Mapping[str, torch.Tensor]],
                     notes: Mapping[str, Mapping[tuple[str, int], str]] | None = None) -> CircuitExplorer:
    """Notebook 02's explorer (see :class:`CircuitExplorer`)."""
    return CircuitExplorer(models, results, data, means, notes)
