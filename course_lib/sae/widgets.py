"""Notebook 03's latent browser: a latent's dashboard by number, or the latents a token drives (:mod:`course_lib.explorer`)."""

from __future__ import annotations

from typing import Any

import torch

from course_lib.explorer import Explorer, fig_png, first_view, set_view, view_widgets
from course_lib.sae.dashboards import Codes, dashboard_html, latents_for_token
from course_lib.sae.model import SparseAutoencoder
from course_lib.sae.plots import activation_histogram


class LatentBrowser(Explorer):
    """Pick a latent by number, or type a token to list the latents it drives; see the latent's dashboard."""

    def __init__(self, codes: Codes, autoencoder: SparseAutoencoder, tokenizer: Any, w_u: torch.Tensor, start: int = 0):
        self.codes, self.autoencoder, self.tokenizer, self.w_u = codes, autoencoder, tokenizer, w_u
        first_view(self, (codes, autoencoder, tokenizer, w_u), (start,), lambda: self.render(start))

    def render(self, latent: int) -> None:
        self.latent = int(latent)
        self.html = dashboard_html(self.codes, self.autoencoder, self.tokenizer, self.w_u, self.latent)
        self.png = fig_png(activation_histogram(self.codes, self.latent))

    def build(self) -> Any:
        import ipywidgets as W

        latent_box = W.BoundedIntText(value=self.latent, min=0, max=self.codes.n_latents - 1, description="latent")
        token_box = W.Text(value="", description="token", placeholder="e.g. ' return'")
        choices = W.Dropdown(options=[], description="latents")
        html_w, img_w = view_widgets(self)

        def on_latent(change: Any) -> None:
            self.render(change["new"])
            set_view(self, html_w, img_w)

        def on_token(change: Any) -> None:
            ids = self.tokenizer.encode(change["new"], add_special_tokens=False) if change["new"] else []
            found = latents_for_token(self.codes, ids[0]) if len(ids) == 1 else []
            choices.options = [(f"{i} (mean {v:.2f})", i) for i, v in found]

        latent_box.observe(on_latent, names="value")
        token_box.observe(on_token, names="value")
        choices.observe(lambda c: c["new"] is not None and latent_box.set_trait("value", c["new"]), names="value")
        return W.VBox([W.HBox([latent_box, token_box, choices]), html_w, img_w])


def latent_browser(codes: Codes, autoencoder: SparseAutoencoder, tokenizer: Any, w_u: torch.Tensor, start: int = 0) -> LatentBrowser:
    """Notebook 03's browser (see :class:`LatentBrowser`)."""
    return LatentBrowser(codes, autoencoder, tokenizer, w_u, start)
