"""Notebook 00's explorer: type a prompt, see the next tokens and the logit lens (:mod:`course_lib.explorer`)."""

from __future__ import annotations

import html
from typing import Any

from course_lib.explorer import Explorer, first_view, set_view, view_widgets
from course_lib.lens.predictions import logit_lens, top_next_tokens


class PromptExplorer(Explorer):
    """Type a prompt: the top-``k`` next tokens and the per-layer logit lens (top token per layer)."""

    def __init__(self, model: Any, prompt: str = "The capital of France is", k: int = 8):
        self.model, self.k = model, k
        first_view(self, (model,), (prompt, k), lambda: self.render(prompt))

    def render(self, prompt: str) -> None:
        preds = top_next_tokens(self.model, prompt, self.k)
        per_layer, final_prob = logit_lens(self.model, prompt, k=1)
        rows = "".join(
            f"<tr><td><code>{html.escape(repr(p.token))}</code></td><td>{p.prob:.3f}</td></tr>" for p in preds
        )
        lens_cells = "".join(
            f"<td title='layer {i}: P(final answer)={float(final_prob[i]):.2f}' "
            f"style='background:rgba(40,160,80,{float(final_prob[i]):.2f});padding:2px 4px'>"
            f"<small>{i}</small><br><code>{html.escape(repr(layer[0].token)[1:-1][:8])}</code></td>"
            for i, layer in enumerate(per_layer)
        )
        self.html = (
            f"<p>prompt: <code>{html.escape(prompt)}</code></p><b>Top next tokens</b><table>{rows}</table>"
            "<b>Logit lens</b> (top token read at each layer; green = probability of the final answer)"
            "<div style='overflow-x:auto'><table><tr>" + lens_cells + "</tr></table></div>"
        )

    def build(self) -> Any:
        import ipywidgets as W

        text = W.Text(value="", description="Prompt:", layout=W.Layout(width="70%"), continuous_update=False)
        button = W.Button(description="Predict", button_style="primary")
        html_w, img_w = view_widgets(self)

        def update(*_: object) -> None:
            if text.value.strip():
                self.render(text.value)
                set_view(self, html_w, img_w)

        button.on_click(update)
        text.observe(update, names="value")
        return W.VBox([W.HBox([text, button]), html_w])


def prompt_explorer(model: Any, prompt: str = "The capital of France is", k: int = 8) -> PromptExplorer:
    """Notebook 00's explorer (see :class:`PromptExplorer`)."""
    return PromptExplorer(model, prompt, k)
