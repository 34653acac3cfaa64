"""course_lib.circuits.plots: the wiring diagram draws a readable, connected circuit."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import circuits  # noqa: E402
from course_lib.circuits import plots  # noqa: E402
from tests.circuits.test_pruning import _planted, planted_model  # noqa: E402, F401


def _circuit(model, nodes, task="t"):
    kept = circuits.all_kept(model)
    kept = {h: torch.zeros_like(m) for h, m in kept.items()}
    for h, c in nodes:
        kept[h][c] = True
    return circuits.Circuit(task=task, model_name="m", order=list(nodes), curve_k=[0], curve_loss=[0.0],
                            n_nodes=len(nodes), train_loss=0.0, test_loss=0.0, full_loss=0.0, edges=1, kept=kept,
                            valid=True)


def test_readable_token():
    assert circuits.readable_token("\u0120x\u010a") == "\u2423x\u21b5"
    assert circuits.readable_token(" a\n") == "\u2423a\u21b5"


def test_wiring_keeps_only_nodes_connected_to_the_answers():
    torch.manual_seed(0)
    cfg = circuits.SparseTransformerConfig(d_vocab=16, d_model=16, n_layers=1, d_mlp=16, n_ctx=8)
    m = circuits.SparseTransformer(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln" not in name:
                p.zero_()
        m.blocks[0].mlp.W_in[2, 5] = 1.0  # mlp read 2 -> neuron 5 -> mlp write 3 -> unembed read 3 -> answer 4
        m.blocks[0].mlp.W_out[5, 3] = -0.5
        m.W_U[3, 4] = 2.0
        m.W_U[3, 7] = 0.01  # below the threshold
    nodes = [("blocks.0.hook_mlp_in", 2), ("blocks.0.mlp.hook_post", 5), ("blocks.0.hook_mlp_out", 3),
             ("hook_final_in", 3), ("blocks.0.hook_mlp_in", 9), ("blocks.0.attn.hook_v", 1)]
    edges = plots.wiring_edges(m, nodes, [4, 7], edge_threshold=0.1)
    assert (("hook_final_in", 3), ("answer", 7), 0.01, "w") not in edges
    conn = plots.connected_to_answers(edges)
    assert conn == set(nodes[:4]) | {("answer", 4)}
    fig = plots.plot_wiring(m, _circuit(m, nodes), None, edge_threshold=0.1, data=_planted(8, 0, "test", 16))
    assert "4 of 6 drawn" in fig.axes[0].get_title()
    plt.close(fig)


@pytest.mark.parametrize("n_nodes", [12, 40])
def test_wiring_labels_do_not_overlap(n_nodes):
    torch.manual_seed(1)
    cfg = circuits.SparseTransformerConfig(d_vocab=64, d_model=32, n_layers=2, d_mlp=64, n_ctx=8)
    m = circuits.SparseTransformer(cfg)  # dense random weights: every node is connected
    a = n_nodes // 4  # a chain of full columns: MLP read -> neuron -> MLP write -> unembed read
    nodes = [(h, c) for h in ("blocks.1.hook_mlp_in", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out", "hook_final_in")
             for c in range(a)]
    notes = {n: "vote +1.20 | ablate +0.31" for n in nodes}
    fig = plots.plot_wiring(m, _circuit(m, nodes), notes, max_nodes=40, data=_planted(8, 0, "test", 64))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in fig.axes[0].texts]
    assert len(boxes) == n_nodes + 2  # every node and both answers
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two node labels overlap"
    labels = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "\u0120" not in labels and "vote +1.20" in labels
    plt.close(fig)


def test_plot_solved_marks_the_solved_cells():
    fig = plots.plot_solved({"m1": {"a": 0.1, "b": 0.9}, "m2": {"a": 0.5, "b": 0.2}}, 0.3)
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # m1/a and m2/b
    assert [t.get_text() for t in ax.texts] == ["0.10", "0.90", "0.50", "0.20"]
    plt.close(fig)


def test_connected_core_drops_unconnected_nodes_and_stays_a_valid_circuit(planted_model):  # noqa: F811 (fixture)
    m = planted_model
    tr, te = _planted(32, 0, "train"), _planted(32, 0, "test")
    means = circuits.node_means(m, torch.full((4, 8), 7))
    nodes = [("hook_final_in", 0), ("blocks.0.mlp.hook_post", 3), ("hook_final_in", 1)]  # the neuron has no weights
    c = _circuit(m, nodes, "planted")
    c = dataclasses.replace(c, target_loss=0.1)
    core = plots.connected_core(m, c, te)
    assert core == [("hook_final_in", 0), ("hook_final_in", 1)]
    small = circuits.pruning.restrict_circuit(m, c, core, tr, te, means)
    assert small.valid and small.n_nodes == 2 and small.edges == 2 and small.test_loss <= 0.1
    assert sum(int(k.sum()) for k in small.kept.values()) == 2
    broken = circuits.pruning.restrict_circuit(m, c, core[:1], tr, te, means)
    assert not broken.valid and broken.n_nodes is None and broken.edges is None
