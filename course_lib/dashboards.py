"""The latent browser widget of notebook 03 (moves to ``sae/widgets.py``)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import torch

from course_lib.sae.dashboards import Codes, dashboard_html, latents_for_token
from course_lib.sae.model import SparseAutoencoder
from course_lib.sae.plots import activation_histogram


def browser(codes: Codes, autoencoder: SparseAutoencoder, tokenizer: Any, w_u: torch.Tensor, start: int = 0) -> Any:
    """An ipywidgets browser: pick a latent by number, or type a token to list the latents it drives.

    Returns the widget box; its ``show(latent)`` attribute renders a latent (call it once so the output
    appears under papermill too).
    """
    import ipywidgets as W
    from IPython.display import HTML, display

    latent_box = W.BoundedIntText(value=start, min=0, max=codes.n_latents - 1, description="latent")
    token_box = W.Text(value="", description="token", placeholder="e.g. ' return'")
    choices = W.Dropdown(options=[], description="latents")
    out = W.Output()

    def show(latent: int) -> None:
        out.clear_output(wait=True)
        with out:
            display(HTML(dashboard_html(codes, autoencoder, tokenizer, w_u, int(latent))))
            fig = activation_histogram(codes, int(latent))
            display(fig)
            plt.close(fig)

    def on_token(change: Any) -> None:
        ids = tokenizer.encode(change["new"], add_special_tokens=False) if change["new"] else []
        if len(ids) != 1:
            choices.options = []
            return
        found = latents_for_token(codes, ids[0])
        choices.options = [(f"{i} (mean {v:.2f})", i) for i, v in found]

    latent_box.observe(lambda c: show(c["new"]), names="value")
    token_box.observe(on_token, names="value")
    choices.observe(lambda c: c["new"] is not None and latent_box.set_trait("value", c["new"]), names="value")
    box = W.VBox([W.HBox([latent_box, token_box, choices]), out])
    box.show = show  # type: ignore[attr-defined]
    return box
