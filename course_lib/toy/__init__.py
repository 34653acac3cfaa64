"""Notebook 01: toy models of superposition (Elhage et al., Anthropic, 2022).

``model`` (configs, data, the batched toy models, training), ``metrics`` (dimensions per feature,
interference, phases...), ``plots``, ``exercises`` (the checkers of the notebook's exercises), ``notebook``
(the notebook's parameter checks and sizes, the weight-sparse comparison's table).
The names notebooks use are re-exported here: ``toy.train_new``, ``toy.dimensions_per_feature``...
"""

from course_lib.toy import exercises, metrics, model, notebook, plots, widgets
from course_lib.toy.metrics import (
    PHASE_NAMES,
    antipodal_pairs,
    classify_phase,
    dead_dimensions,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    features_per_neuron,
    features_represented,
    interference,
    neuron_antipodal_pairs,
    neuron_feature_membership,
    phase_grid,
    polysemantic_fraction,
    summarize,
    superposition,
)
from course_lib.toy.model import (
    KINDS,
    ToyConfig,
    ToyKind,
    ToyModel,
    ToyTrainConfig,
    best_of_replicates,
    evaluate_loss,
    feature_probabilities,
    forward_and_loss,
    generate_batch,
    importances,
    train,
    train_new,
)

__all__ = [
    "KINDS", "PHASE_NAMES", "ToyConfig", "ToyKind", "ToyModel", "ToyTrainConfig", "antipodal_pairs",
    "best_of_replicates", "classify_phase", "dead_dimensions", "dimensions_per_feature", "evaluate_loss", "exercises",
    "feature_dimensionality", "feature_norms", "feature_probabilities", "features_per_neuron",
    "features_represented", "forward_and_loss", "generate_batch", "importances", "interference", "metrics", "model",
    "neuron_antipodal_pairs", "neuron_feature_membership", "notebook", "phase_grid", "plots", "widgets", "polysemantic_fraction",
    "summarize", "superposition", "train", "train_new",
]
