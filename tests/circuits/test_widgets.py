"""course_lib.circuits.widgets: the circuit explorer offers each model's own tasks and lists every node."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import torch

from course_lib import circuits

from .test_plots import _circuit, _planted


def test_explorer_offers_each_models_own_tasks_and_lists_every_node(monkeypatch):
    monkeypatch.setenv("COURSE_LIB_HEADLESS", "0")
    cfg = circuits.SparseTransformerConfig(d_vocab=16, d_model=32, n_layers=1, d_mlp=256, n_ctx=8)
    torch.manual_seed(0)
    a, b = circuits.SparseTransformer(cfg).eval(), circuits.SparseTransformer(cfg).eval()
    data = {t: dataclasses.replace(_planted(8, 0, "test"), task=t) for t in ("t1", "t2")}
    big = [("blocks.0.mlp.hook_post", c) for c in range(250)]  # more than 200 nodes
    results = {"a": {"t1": _circuit(a, big, "t1")}, "b": {"t2": _circuit(b, big[:3], "t2")}}
    means = {n: circuits.node_means(m, torch.full((2, 8), 7)) for n, m in (("a", a), ("b", b))}
    ex = circuits.widgets.circuit_explorer({"a": a, "b": b}, results, data, means)
    assert len(ex.node_options("a", "t1")) == 250
    box = ex.build()
    model_dd, task_dd = box.children[0].children
    assert list(task_dd.options) == ["t1"] and len(box.children[1].options) == 250
    model_dd.value = "b"
    assert list(task_dd.options) == ["t2"] and len(box.children[1].options) == 3
    plt.close("all")
