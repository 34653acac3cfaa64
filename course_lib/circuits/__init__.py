"""Notebook 02: weight-sparse transformers and their circuits (after Gao et al., OpenAI, 2025).

``transformer`` (the model), ``training`` (weight-sparse training, cached), ``tasks`` (binary
next-token Python tasks), ``pruning`` (node masks, circuit search), ``edges`` (circuit size),
``frontier`` (dense/sparse circuit size at matched pretraining loss), ``plots``, ``exercises`` (the
checkers of the notebook's exercises). The names notebooks use are re-exported here:
``circuits.find_circuit``... ``reference_training`` (the resumable CPU trainer of the reference set, a
command-line module) is imported on first use (``circuits.reference_training``), not with the package;
so is ``notebook`` (notebook 02's parameter checks, result records and report prose), which imports it.
"""

import importlib
from types import ModuleType

from course_lib.circuits import (
    checkpoints,
    edges,
    exercises,
    frontier,
    plots,
    pruning,
    tasks,
    training,
    transformer,
    widgets,
)
from course_lib.circuits.edges import count_edges, edge_list_counts, weight_edges
from course_lib.circuits.pruning import (
    Circuit,
    NodeSite,
    PruneConfig,
    accept_circuit,
    all_kept,
    composition_matched_losses,
    find_circuit,
    find_circuit_cached,
    flipped_labels,
    hard_mask,
    iter_node_hooks,
    learn_masks,
    masks_from_order,
    node_evidence,
    node_means,
    node_sites,
    node_top_tokens,
    random_circuit_losses,
    readable_token,
    shuffled_labels,
    task_logits,
    task_loss,
    task_loss_from_logits,
    total_nodes,
    zero_means,
)
from course_lib.circuits.tasks import (
    SPLITS,
    SUITE,
    TASKS,
    Example,
    Task,
    TaskData,
    encode_example,
    make_task_data,
    prompt_splits,
    single_token_id,
)
from course_lib.circuits.training import (
    CircuitTrainConfig,
    TrainedModel,
    checkpoint_nonzero_fraction,
    eval_loss,
    load_or_train,
    train,
    val_windows,
)
from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig, abstopk

__all__ = [
    "SUITE", "TASKS", "accept_circuit", "checkpoints", "Circuit", "CircuitTrainConfig", "Example", "frontier", "NodeSite", "PruneConfig", "SparseTransformer",
    "SparseTransformerConfig", "Task", "TaskData", "TrainedModel", "abstopk", "all_kept", "checkpoint_nonzero_fraction",
    "count_edges", "edge_list_counts", "edges", "encode_example", "exercises", "eval_loss", "find_circuit", "find_circuit_cached", "hard_mask",
    "iter_node_hooks", "learn_masks", "load_or_train", "make_task_data", "masks_from_order", "node_means",
    "node_sites", "node_top_tokens", "plots", "widgets", "pruning", "single_token_id", "task_logits", "task_loss",
    "task_loss_from_logits", "tasks", "total_nodes", "train", "training", "transformer", "val_windows", "random_circuit_losses",
    "shuffled_labels", "zero_means", "readable_token", "weight_edges", "SPLITS", "prompt_splits", "flipped_labels",
    "composition_matched_losses", "node_evidence",
]


def __getattr__(name: str) -> ModuleType:
    """``circuits.reference_training`` and ``circuits.notebook`` (which imports it) on first use: importing
    them with the package would make ``python -m course_lib.circuits.reference_training`` (the background
    trainer) import it twice."""
    if name in ("reference_training", "notebook"):
        return importlib.import_module(f"course_lib.circuits.{name}")
    raise AttributeError(f"module 'course_lib.circuits' has no attribute {name!r}")
