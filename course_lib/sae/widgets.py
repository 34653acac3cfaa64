"""Notebook 03's explorers (:mod:`course_lib.explorer`): the latent browser (a latent's dashboard by number, or
the latents a token drives), steering with a latent, and the latents that fire on pasted text."""

from __future__ import annotations

import html
from typing import Any

import torch

from course_lib.explorer import Explorer, fig_png, first_view, set_view, view_widgets
from course_lib.sae.dashboards import Codes, dashboard_html, latents_for_token
from course_lib.sae.model import SparseAutoencoder
from course_lib.sae.plots import activation_histogram
from course_lib.sae.steering import SteerResult, TokenLatents, latents_on_text, steer


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


def _steer_html(r: SteerResult) -> str:
    esc = html.escape
    toks = lambda pairs: ", ".join(f"<code>{esc(repr(t))}</code> {d:+.1f}" for t, d in pairs)  # noqa: E731
    return (f"<div><b>latent {r.latent}</b>, strength {r.strength:g} × its max activation "
            f"({r.seconds:.1f} s for both generations)<br>"
            f"<b>prompt</b> <code>{esc(r.prompt)}</code><br>"
            f"<b>before</b> <code>{esc(r.before)}</code><br><b>after</b> <code>{esc(r.after)}</code><br>"
            f"next-token logits at the prompt's end, most raised: {toks(r.promoted)}<br>"
            f"most lowered: {toks(r.suppressed)}</div>")


class SteeringExplorer(Explorer):
    """Pick a latent and a strength; see the greedy continuation of a prompt before and after steering."""

    def __init__(self, model: Any, autoencoder: SparseAutoencoder, codes: Codes, hook_name: str, prompt: str,
                 latent: int, strength: float = 4.0, max_new_tokens: int = 20):
        self.model, self.autoencoder, self.codes, self.hook_name = model, autoencoder, codes, hook_name
        self.max_new_tokens = max_new_tokens
        first_view(self, (model, autoencoder, codes), (prompt, latent, strength, max_new_tokens),
                   lambda: self.render(prompt, latent, strength))

    def max_act(self, latent: int) -> float:
        _, acts = self.codes.latent(latent)
        return float(acts.max()) if acts.numel() else 1.0

    def render(self, prompt: str, latent: int, strength: float) -> None:
        self.prompt, self.latent, self.strength = prompt, int(latent), float(strength)
        self.result = steer(self.model, self.autoencoder, self.hook_name, self.latent, self.strength,
                            self.max_act(self.latent), prompt, self.max_new_tokens)
        self.html = _steer_html(self.result)

    def build(self) -> Any:
        import ipywidgets as W

        prompt_w = W.Text(value=self.prompt, description="prompt", continuous_update=False,
                          layout=W.Layout(width="60%"))
        latent_w = W.BoundedIntText(value=self.latent, min=0, max=self.codes.n_latents - 1, description="latent")
        strength_w = W.FloatSlider(value=self.strength, min=-20.0, max=20.0, step=0.5, description="strength",
                                   continuous_update=False)
        go = W.Button(description="Generate")
        html_w, img_w = view_widgets(self)

        def update(_: Any = None) -> None:  # any change regenerates (a few seconds); the button reruns
            go.disabled, go.description = True, "generating..."
            try:
                self.render(prompt_w.value, latent_w.value, strength_w.value)
                set_view(self, html_w, img_w)
            finally:
                go.disabled, go.description = False, "Generate"

        go.on_click(update)
        for w in (prompt_w, latent_w, strength_w):
            w.observe(update, names="value")
        return W.VBox([prompt_w, W.HBox([latent_w, strength_w, go]), html_w])


def steering_explorer(model: Any, autoencoder: SparseAutoencoder, codes: Codes, hook_name: str, prompt: str,
                      latent: int, strength: float = 4.0, max_new_tokens: int = 20) -> SteeringExplorer:
    """Notebook 03's steering widget (see :class:`SteeringExplorer` and :mod:`course_lib.sae.steering`)."""
    return SteeringExplorer(model, autoencoder, codes, hook_name, prompt, latent, strength, max_new_tokens)


def _text_html(rows: list[TokenLatents]) -> str:
    cells = []
    for r in rows:
        lat = "<br>".join(f"{i} ({a:.1f})" for i, a in r.latents) if not r.skipped else "<i>skipped</i>"
        cells.append(f"<td style='vertical-align:top;padding:2px 6px;border:1px solid #ddd'>"
                     f"<code>{html.escape(repr(r.token))}</code><br><small>{lat}</small></td>")
    return ("<div style='overflow-x:auto'><table style='border-collapse:collapse'><tr>" + "".join(cells)
            + "</tr></table></div>")


class TextLatentsExplorer(Explorer):
    """Paste text; see the strongest latents on each token, and pick one of them to open its dashboard."""

    def __init__(self, model: Any, autoencoder: SparseAutoencoder, codes: Codes, tokenizer: Any, w_u: torch.Tensor,
                 hook_name: str, text: str, top: int = 3):
        self.model, self.autoencoder, self.codes, self.tokenizer, self.w_u = model, autoencoder, codes, tokenizer, w_u
        self.hook_name, self.top = hook_name, top
        first_view(self, (model, autoencoder, codes, tokenizer, w_u), (hook_name, text, top), lambda: self.render(text))

    def render(self, text: str) -> None:
        self.text = text
        self.rows = latents_on_text(self.model, self.autoencoder, self.hook_name, text, self.top)
        self.html = _text_html(self.rows)
        self.png = None

    def found(self) -> list[int]:
        """The latents shown, strongest activation first, each once."""
        best: dict[int, float] = {}
        for r in self.rows:
            for i, a in r.latents:
                best[i] = max(best.get(i, 0.0), a)
        return sorted(best, key=lambda i: -best[i])

    def build(self) -> Any:
        import ipywidgets as W

        text_w = W.Textarea(value=self.text, description="text", layout=W.Layout(width="80%", height="4em"))
        go = W.Button(description="Encode")
        pick = W.Dropdown(options=self.found(), description="dashboard")
        html_w, _ = view_widgets(self)
        dash_w = W.HTML(value="")

        def on_go(_: Any) -> None:
            self.render(text_w.value)
            html_w.value = self.html
            pick.options = self.found()

        def on_pick(change: Any) -> None:
            if change["new"] is not None:
                dash_w.value = dashboard_html(self.codes, self.autoencoder, self.tokenizer, self.w_u, int(change["new"]))

        go.on_click(on_go)
        pick.observe(on_pick, names="value")
        return W.VBox([W.HBox([text_w, go]), html_w, pick, dash_w])


def text_latents(model: Any, autoencoder: SparseAutoencoder, codes: Codes, tokenizer: Any, w_u: torch.Tensor,
                 hook_name: str, text: str, top: int = 3) -> TextLatentsExplorer:
    """Notebook 03's live-text widget (see :class:`TextLatentsExplorer`)."""
    return TextLatentsExplorer(model, autoencoder, codes, tokenizer, w_u, hook_name, text, top)
