"""Interactive explorers for the orientation notebook (ipywidgets).

Each function returns ``(widget, update)``: display the widget, and call ``update()`` once so that
an unattended run (papermill) shows a result too.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as W

from course_lib import lens


def prompt_explorer(model, prompt: str = "The capital of France is", k: int = 8) -> tuple[W.Widget, Callable[[], None]]:
    """Type a prompt: see the top-``k`` next tokens and the per-layer logit lens (top token per layer)."""
    text = W.Text(value=prompt, description="Prompt:", layout=W.Layout(width="70%"), continuous_update=False)
    button = W.Button(description="Predict", button_style="primary")
    out = W.HTML()

    def update(*_: object) -> None:
        preds = lens.top_next_tokens(model, text.value, k)
        per_layer, final_prob = lens.logit_lens(model, text.value, k=1)
        rows = "".join(
            f"<tr><td><code>{html.escape(repr(p.token))}</code></td><td>{p.prob:.3f}</td></tr>" for p in preds
        )
        lens_cells = "".join(
            f"<td title='layer {i}: P(final answer)={float(final_prob[i]):.2f}' "
            f"style='background:rgba(40,160,80,{float(final_prob[i]):.2f});padding:2px 4px'>"
            f"<small>{i}</small><br><code>{html.escape(repr(layer[0].token)[1:-1][:8])}</code></td>"
            for i, layer in enumerate(per_layer)
        )
        out.value = (
            "<b>Top next tokens</b><table>" + rows + "</table>"
            "<b>Logit lens</b> (top token read at each layer; green = probability of the final answer)"
            "<div style='overflow-x:auto'><table><tr>" + lens_cells + "</tr></table></div>"
        )

    button.on_click(update)
    text.observe(update, names="value")
    return W.VBox([W.HBox([text, button]), out]), update
