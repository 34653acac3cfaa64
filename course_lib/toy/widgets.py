"""Notebook 01's explorer: retrain a toy model from sliders and watch its features (:mod:`course_lib.explorer`)."""

from __future__ import annotations

import dataclasses
import io
import time
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from course_lib.explorer import Explorer, first_view, set_view, view_widgets
from course_lib.toy.metrics import dimensions_per_feature, features_represented
from course_lib.toy.model import ToyConfig, ToyTrainConfig, importances, train_new
from course_lib.toy.plots import widget_view


@dataclasses.dataclass(frozen=True)
class ToySettings:
    sparsity: float = 0.9  # S: each feature is present with probability 1 - S
    decay: float = 0.9  # importance of feature i is decay**i
    n_features: int = 12  # features squeezed into 5 hidden dimensions
    kept: float = 1.0  # fraction of W kept by the top-k weight projection


class ToyExplorer(Explorer):
    """Sliders for sparsity, importance decay, number of features and kept weights; each change trains
    a fresh ``n -> 5`` toy model (``train_config``) and draws its ``W^T W`` and feature norms."""

    def __init__(self, train_config: ToyTrainConfig, seed: int = 0, device: str | torch.device = "cpu",
                 settings: ToySettings = ToySettings()):
        self.train_config, self.seed, self.device = train_config, seed, device
        self.settings = settings
        self.figure: Figure | None = None
        self.seconds = 0.0
        first_view(self, (), (train_config, seed, str(device), settings), lambda: self.render(settings))

    def render(self, s: ToySettings) -> None:
        start = time.perf_counter()
        cfg = ToyConfig(n_features=s.n_features, d_hidden=5, n_instances=1)
        tc = dataclasses.replace(self.train_config, weight_sparsity=float(s.kept))
        model = train_new(cfg, torch.tensor([1 - s.sparsity]),
                                     importances(s.n_features, s.decay, 1), tc,
                                     seed=self.seed, device=self.device)
        W_ = model.W.detach().cpu()
        self.seconds = time.perf_counter() - start
        title = (f"S = {s.sparsity:.2f}, decay {s.decay:.2f}, {s.n_features} features -> 5 dims, "
                 f"kept weights {s.kept:.2f}: {int(features_represented(W_)[0])} features "
                 f"represented, D* = {float(dimensions_per_feature(W_)[0]):.2f} "
                 f"(trained in {self.seconds:.2f} s)")
        self.figure = widget_view(W_, title)
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
        html_w, img_w = view_widgets(self)

        def update(*_: object) -> None:
            status.value = "<i>training...</i>"
            self.settings = ToySettings(**{k: sl.value for k, sl in sliders.items()})
            self.render(self.settings)
            set_view(self, html_w, img_w)
            status.value = ""

        for sl in sliders.values():
            sl.observe(update, names="value")
        return W.VBox([*sliders.values(), status, img_w])


def toy_explorer(train_config: ToyTrainConfig, seed: int = 0, device: str | torch.device = "cpu") -> ToyExplorer:
    """Notebook 01's explorer (see :class:`ToyExplorer`); ``.figure`` and ``.seconds`` describe the first view."""
    return ToyExplorer(train_config, seed, device)
