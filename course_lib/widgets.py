"""The course's interactive explorers (ipywidgets), safe to run unattended.

Every explorer is an :class:`Explorer`: building it computes its first view (an HTML fragment and/or
a figure rendered to PNG); displaying it shows

- with a front end attached (JupyterLab): live controls whose callbacks rewrite ``HTML`` and ``Image``
  widgets' values. No ``Output`` widget is ever captured into, so no cell's outputs are routed
  through a widget: that capture is what left papermill waiting forever on a finished cell;
- headless (:func:`course_lib.runtime.headless`, set by the runner and the tests): the first view as
  plain static output, and no widget is created at all.

The notebook only builds an explorer and displays it: ``display(widgets.prompt_explorer(model))``.
"""

from __future__ import annotations

import dataclasses
import html
import io
import time
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from course_lib import lens, runtime


def fig_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class Explorer:
    """Base class: ``html`` and ``png`` hold the current view; :meth:`build` makes the live controls."""

    html: str = ""
    png: bytes | None = None

    def build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, Image, display

        if runtime.headless():
            if self.html:
                display(HTML(self.html))
            if self.png:
                display(Image(data=self.png, format="png"))
            return
        display(self.build())


def _view_widgets(ex: Explorer) -> tuple[Any, Any]:
    """An HTML and an Image widget showing ``ex``'s current view (the Image hidden when empty)."""
    import ipywidgets as W

    html_w = W.HTML(value=ex.html)
    img_w = W.Image(value=ex.png or b"", format="png", layout=W.Layout(max_width="100%"))
    img_w.layout.display = None if ex.png else "none"
    return html_w, img_w


def _set_view(ex: Explorer, html_w: Any, img_w: Any) -> None:
    html_w.value = ex.html
    img_w.value = ex.png or b""
    img_w.layout.display = None if ex.png else "none"


# --------------------------------------------------------------------------- 00: prompt explorer


class PromptExplorer(Explorer):
    """Type a prompt: the top-``k`` next tokens and the per-layer logit lens (top token per layer)."""

    def __init__(self, model: Any, prompt: str = "The capital of France is", k: int = 8):
        self.model, self.k = model, k
        self.render(prompt)

    def render(self, prompt: str) -> None:
        preds = lens.top_next_tokens(self.model, prompt, self.k)
        per_layer, final_prob = lens.logit_lens(self.model, prompt, k=1)
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
        html_w, img_w = _view_widgets(self)

        def update(*_: object) -> None:
            if text.value.strip():
                self.render(text.value)
                _set_view(self, html_w, img_w)

        button.on_click(update)
        text.observe(update, names="value")
        return W.VBox([W.HBox([text, button]), html_w])


def prompt_explorer(model: Any, prompt: str = "The capital of France is", k: int = 8) -> PromptExplorer:
    """Notebook 00's explorer (see :class:`PromptExplorer`)."""
    return PromptExplorer(model, prompt, k)


# --------------------------------------------------------------------------- 01: toy model explorer


@dataclasses.dataclass(frozen=True)
class ToySettings:
    sparsity: float = 0.9  # S: each feature is present with probability 1 - S
    decay: float = 0.9  # importance of feature i is decay**i
    n_features: int = 12  # features squeezed into 5 hidden dimensions
    kept: float = 1.0  # fraction of W kept by the top-k weight projection


class ToyExplorer(Explorer):
    """Sliders for sparsity, importance decay, number of features and kept weights; each change trains
    a fresh ``n -> 5`` toy model (``train_config``) and draws its ``W^T W`` and feature norms."""

    def __init__(self, train_config: Any, seed: int = 0, device: str | torch.device = "cpu",
                 settings: ToySettings = ToySettings()):
        self.train_config, self.seed, self.device = train_config, seed, device
        self.settings = settings
        self.figure: Figure | None = None
        self.seconds = 0.0
        self.render(settings)

    def render(self, s: ToySettings) -> None:
        from course_lib import toy_models, toy_plots

        start = time.perf_counter()
        cfg = toy_models.ToyConfig(n_features=s.n_features, d_hidden=5, n_instances=1)
        tc = dataclasses.replace(self.train_config, weight_sparsity=float(s.kept))
        model = toy_models.train_new(cfg, torch.tensor([1 - s.sparsity]),
                                     toy_models.importances(s.n_features, s.decay, 1), tc,
                                     seed=self.seed, device=self.device)
        W_ = model.W.detach().cpu()
        self.seconds = time.perf_counter() - start
        title = (f"S = {s.sparsity:.2f}, decay {s.decay:.2f}, {s.n_features} features -> 5 dims, "
                 f"kept weights {s.kept:.2f}: {int(toy_models.features_represented(W_)[0])} features "
                 f"represented, D* = {float(toy_models.dimensions_per_feature(W_)[0]):.2f} "
                 f"(trained in {self.seconds:.2f} s)")
        self.figure = toy_plots.widget_view(W_, title)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        self.png = buf.getvalue()
        plt.close(self.figure)

    def build(self) -> Any:
        import ipywidgets as W

        s = self.settings
        sliders = {
            "sparsity": W.FloatSlider(value=s.sparsity, min=0.0, max=0.99, step=0.01, description="sparsity S"),
            "decay": W.FloatSlider(value=s.decay, min=0.5, max=1.0, step=0.05, description="importance decay"),
            "n_features": W.IntSlider(value=s.n_features, min=5, max=30, step=1, description="n features"),
            "kept": W.FloatSlider(value=s.kept, min=0.05, max=1.0, step=0.05, description="kept weights"),
        }
        for sl in sliders.values():
            sl.continuous_update = False
            sl.style = {"description_width": "120px"}
            sl.layout = W.Layout(width="420px")
        status = W.HTML()
        html_w, img_w = _view_widgets(self)

        def update(*_: object) -> None:
            status.value = "<i>training...</i>"
            self.settings = ToySettings(**{k: sl.value for k, sl in sliders.items()})
            self.render(self.settings)
            _set_view(self, html_w, img_w)
            status.value = ""

        for sl in sliders.values():
            sl.observe(update, names="value")
        return W.VBox([*sliders.values(), status, img_w])


def toy_explorer(train_config: Any, seed: int = 0, device: str | torch.device = "cpu") -> ToyExplorer:
    """Notebook 01's explorer (see :class:`ToyExplorer`); ``.figure`` and ``.seconds`` describe the first view."""
    return ToyExplorer(train_config, seed, device)


# --------------------------------------------------------------------------- 02: circuit explorer


class CircuitExplorer(Explorer):
    """Pick a task and a model, see its circuit's wiring, switch nodes off and watch the held-out task loss."""

    def __init__(self, models: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
                 data: Mapping[str, Any], means: Mapping[str, Mapping[str, torch.Tensor]],
                 top_tokens: Mapping[str, Mapping[tuple[str, int], list[str]]] | None = None):
        self.models, self.results, self.data, self.means = models, results, data, means
        self.top_tokens = top_tokens or {}
        self.render(next(iter(results)), next(iter(data)), ())

    def node_options(self, name: str, task: str) -> list[tuple[str, tuple[str, int]]]:
        """Every kept node of the circuit as ``(label, (hook, channel))``."""
        from course_lib import circuit_plots, circuits

        c = self.results[name][task]
        sites = {s.hook: s for s in circuits.node_sites(self.models[name])}
        return [(circuit_plots.node_label(sites[h], ch, self.models[name].cfg.d_head), (h, ch))
                for h, m in c.kept.items() for ch in torch.nonzero(m).flatten().tolist()]

    def render(self, name: str, task: str, off: tuple[tuple[str, int], ...]) -> None:
        from course_lib import circuit_plots, circuits

        model, c = self.models[name], self.results[name][task]
        masks = {h: m.float() for h, m in c.kept.items()}
        for h, ch in off:
            masks[h] = masks[h].clone()
            masks[h][ch] = 0.0
        loss = circuits.task_loss(model, self.data[task], masks, self.means[name])
        kept_n = sum(int(m.sum()) for m in c.kept.values())
        size = f"{c.edges} edges" if c.n_nodes is not None else "target not reached, best set shown"
        self.html = (f"<p><b>{html.escape(task)}</b> in <b>{html.escape(name)}</b>: circuit {kept_n} nodes, "
                     f"{size}; switched off {len(off)} -> task loss <b>{loss:.3f}</b> on held-out prompts "
                     f"(circuit {c.test_loss:.3f}, full model {c.full_loss:.3f}, chance 0.693)</p>")
        self.png = fig_png(circuit_plots.plot_wiring(model, c, self.top_tokens.get(name), max_nodes=40))

    def build(self) -> Any:
        import ipywidgets as W

        model_dd = W.Dropdown(options=list(self.results), description="model")
        task_dd = W.Dropdown(options=list(self.data), description="task")
        nodes_sel = W.SelectMultiple(options=[], rows=12, description="switch off", layout=W.Layout(width="380px"))
        html_w, img_w = _view_widgets(self)
        busy = [False]

        def update(*_: object) -> None:
            if not busy[0]:
                self.render(model_dd.value, task_dd.value, tuple(nodes_sel.value))
                _set_view(self, html_w, img_w)

        def on_pick(*_: object) -> None:
            busy[0] = True
            nodes_sel.options = self.node_options(model_dd.value, task_dd.value)
            nodes_sel.value = ()
            busy[0] = False
            update()

        model_dd.observe(on_pick, names="value")
        task_dd.observe(on_pick, names="value")
        nodes_sel.observe(update, names="value")
        nodes_sel.options = self.node_options(model_dd.value, task_dd.value)
        return W.VBox([W.HBox([task_dd, model_dd]), nodes_sel, html_w, img_w])


def circuit_explorer(models: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any],
                     means: Mapping[str, Mapping[str, torch.Tensor]],
                     top_tokens: Mapping[str, Mapping[tuple[str, int], list[str]]] | None = None) -> CircuitExplorer:
    """Notebook 02's explorer (see :class:`CircuitExplorer`)."""
    return CircuitExplorer(models, results, data, means, top_tokens)


# --------------------------------------------------------------------------- 03: latent browser


class LatentBrowser(Explorer):
    """Pick a latent by number, or type a token to list the latents it drives; see the latent's dashboard."""

    def __init__(self, codes: Any, sae: Any, tokenizer: Any, w_u: torch.Tensor, start: int = 0):
        self.codes, self.sae, self.tokenizer, self.w_u = codes, sae, tokenizer, w_u
        self.render(start)

    def render(self, latent: int) -> None:
        from course_lib import dashboards

        self.latent = int(latent)
        self.html = dashboards.dashboard_html(self.codes, self.sae, self.tokenizer, self.w_u, self.latent)
        self.png = fig_png(dashboards.activation_histogram(self.codes, self.latent))

    def build(self) -> Any:
        import ipywidgets as W

        from course_lib import dashboards

        latent_box = W.BoundedIntText(value=self.latent, min=0, max=self.codes.n_latents - 1, description="latent")
        token_box = W.Text(value="", description="token", placeholder="e.g. ' return'")
        choices = W.Dropdown(options=[], description="latents")
        html_w, img_w = _view_widgets(self)

        def on_latent(change: Any) -> None:
            self.render(change["new"])
            _set_view(self, html_w, img_w)

        def on_token(change: Any) -> None:
            ids = self.tokenizer.encode(change["new"], add_special_tokens=False) if change["new"] else []
            found = dashboards.latents_for_token(self.codes, ids[0]) if len(ids) == 1 else []
            choices.options = [(f"{i} (mean {v:.2f})", i) for i, v in found]

        latent_box.observe(on_latent, names="value")
        token_box.observe(on_token, names="value")
        choices.observe(lambda c: c["new"] is not None and latent_box.set_trait("value", c["new"]), names="value")
        return W.VBox([W.HBox([latent_box, token_box, choices]), html_w, img_w])


def latent_browser(codes: Any, sae: Any, tokenizer: Any, w_u: torch.Tensor, start: int = 0) -> LatentBrowser:
    """Notebook 03's browser (see :class:`LatentBrowser`)."""
    return LatentBrowser(codes, sae, tokenizer, w_u, start)


# --------------------------------------------------------------------------- 04: explain it yourself


class ExplainExplorer(Explorer):
    """Pick a unit, read its train records, type an explanation, score it against the model's own."""

    def __init__(self, unit_records: Mapping[str, Any], scorers: Any, reference: Mapping[str, Any],
                 reference_name: str, text: str = 'the token "("'):
        self.units, self.scorers = unit_records, scorers
        self.reference, self.reference_name = reference, reference_name
        self.unit, self.text = next(iter(unit_records)), text
        self.render_scores(self.unit, text)

    def records_view(self, unit: str) -> str:
        from course_lib import autointerp_plots

        return f"<b>{html.escape(unit)}</b> train records:" + autointerp_plots.records_html(self.units[unit])

    def render_scores(self, unit: str, text: str) -> None:
        from course_lib import autointerp_plots
        from course_lib.autointerp import pipeline, results

        self.unit, self.text = unit, text
        ur = self.units[unit]
        mine = self.scorers.score(pipeline.explain_text(text, unit), ur)
        theirs = self.reference.get(unit)

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        rows = "".join(
            f"<tr><td>{k}</td><td>{fmt(mine.scores[k])}</td>"
            f"<td>{fmt(None if theirs is None else theirs.scores[k])}</td></tr>" for k in results.SCORE_KEYS)
        yours = html.escape(mine.explanation) if mine.explanation else f"[missing: {mine.reason}]"
        ref = html.escape(theirs.explanation) if theirs is not None and theirs.explanation else "-"
        self.html = (self.records_view(unit)
                     + f"<p>you: <i>{yours}</i><br>{html.escape(self.reference_name)}: <i>{ref}</i></p>"
                     f"<table><tr><th>score</th><th>you</th><th>{html.escape(self.reference_name)}</th></tr>{rows}</table>"
                     "test records with your simulation:"
                     + autointerp_plots.records_html(ur, mine.extra.get("simulated"), which="test"))

    def build(self) -> Any:
        import ipywidgets as W

        pick = W.Dropdown(options=list(self.units), value=self.unit, description="unit")
        text = W.Text(value=self.text, description="find ...", layout=W.Layout(width="70%"))
        button = W.Button(description="Score", button_style="primary")
        status = W.HTML()
        html_w, img_w = _view_widgets(self)

        def on_unit(change: Any) -> None:  # records at once; scores on demand
            html_w.value = self.records_view(change["new"]) + "<p><i>press Score to score your explanation</i></p>"

        def on_score(*_: object) -> None:
            status.value = "<i>scoring...</i>"
            button.disabled = True
            try:
                start = time.perf_counter()
                self.render_scores(pick.value, text.value)
                html_w.value = self.html
                status.value = f"<small>scored in {time.perf_counter() - start:.1f} s</small>"
            finally:
                button.disabled = False

        pick.observe(on_unit, names="value")
        button.on_click(on_score)
        return W.VBox([W.HBox([pick, button, status]), text, html_w])


def explain_explorer(unit_records: Mapping[str, Any], scorers: Any, reference: Mapping[str, Any],
                     reference_name: str, text: str = 'the token "("') -> ExplainExplorer:
    """Notebook 04's "explain it yourself" explorer (see :class:`ExplainExplorer`)."""
    return ExplainExplorer(unit_records, scorers, reference, reference_name, text)


__all__ = [
    "Explorer", "fig_png", "prompt_explorer", "toy_explorer", "circuit_explorer", "latent_browser",
    "explain_explorer", "ToySettings",
]
