"""The interactive circuit explorer for notebook 02 (moves to ``circuits/widgets.py``)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import torch

from course_lib import circuits
from course_lib.circuits.plots import node_label, plot_wiring
from course_lib.circuits.transformer import SparseTransformer

# --------------------------------------------------------------------------- widget


def circuit_explorer(
    models: Mapping[str, SparseTransformer],
    results: Mapping[str, Mapping[str, circuits.Circuit]],
    data: Mapping[str, circuits.TaskData],
    means: Mapping[str, Mapping[str, torch.Tensor]],
    top_tokens: Mapping[str, Mapping[tuple[str, int], list[str]]] | None = None,
):
    """An ipywidgets explorer: pick a task and a model, see its circuit, switch nodes off, watch task loss.

    Returns ``(widget, update)``; ``update()`` redraws (call it once so that papermill records output).
    """
    import ipywidgets as w
    from IPython.display import clear_output, display

    model_dd = w.Dropdown(options=list(results), description="model")
    task_dd = w.Dropdown(options=list(data), description="task")
    nodes_sel = w.SelectMultiple(options=[], rows=10, description="switch off", layout=w.Layout(width="380px"))
    out = w.Output()

    def refresh_nodes(*_):
        c = results[model_dd.value][task_dd.value]
        sites = {s.hook: s for s in circuits.node_sites(models[model_dd.value])}
        opts = []
        for h, m in c.kept.items():
            for ch in torch.nonzero(m).flatten().tolist():
                opts.append((node_label(sites[h], ch, models[model_dd.value].cfg.d_head), (h, ch)))
        nodes_sel.options = opts[:200]
        nodes_sel.value = ()

    def update(*_):
        name, task = model_dd.value, task_dd.value
        model, c = models[name], results[name][task]
        masks = {h: m.float() for h, m in c.kept.items()}
        for h, ch in nodes_sel.value:
            masks[h] = masks[h].clone()
            masks[h][ch] = 0.0
        loss = circuits.task_loss(model, data[task], masks, means[name])
        with out:
            clear_output(wait=True)
            kept_n = sum(int(m.sum()) for m in c.kept.values())
            size = f"{c.edges} edges" if c.n_nodes is not None else "target not reached, best set shown"
            print(f"{task} in {name}: circuit {kept_n} nodes, {size}; "
                  f"switched off {len(nodes_sel.value)} -> task loss {loss:.3f} on held-out prompts "
                  f"(circuit {c.test_loss:.3f}, full model {c.full_loss:.3f}, chance 0.693)")
            fig = plot_wiring(model, c, (top_tokens or {}).get(name), max_nodes=40)
            display(fig)
            plt.close(fig)

    def on_pick(*_):
        refresh_nodes()
        update()

    model_dd.observe(on_pick, names="value")
    task_dd.observe(on_pick, names="value")
    nodes_sel.observe(update, names="value")
    refresh_nodes()
    box = w.VBox([w.HBox([task_dd, model_dd]), nodes_sel, out])
    return box, update
