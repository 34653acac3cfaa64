"""Notebook 03: sparse autoencoders on a real LM's residual stream (TopK, Gao et al. 2024; ReLU + L1; JumpReLU; BatchTopK).

Modules: ``model`` (the SAE and its losses), ``fast_grads`` (the one-GEMM TopK gradients),
``training`` (steps, loop, cache), ``evaluation`` (reconstruction, sparsity, downstream loss),
``harvest`` and ``store`` (the on-disk activation store), ``controls`` (single-factor controls of the
dead-latent fixes), ``synthetic`` and ``recovery`` (ground truth: SAEs on synthetic features, MCC,
absorption), ``saelens_io`` (SAELens's folder layout), ``dashboards`` (feature dashboards), ``steering``
(steer generation with a latent, latents on live text), ``plots``, ``notebook`` (notebook 03's settings,
section summaries, their prose and its metrics), and ``default`` (the course's default SAE, which notebook
04 loads). Notebooks write ``from course_lib import sae`` and use ``sae.SAEConfig``,
``sae.load_or_train``, ``sae.evaluation.reconstruction_metrics``, ``sae.plots.plot_training``...
"""

from course_lib.sae import (
    controls,
    dashboards,
    default,
    evaluation,
    exercises,
    fast_grads,
    harvest,
    model,
    notebook,
    plots,
    recovery,
    saelens_io,
    steering,
    store,
    synthetic,
    training,
    widgets,
)
from course_lib.sae.default import DefaultSAE, default_configs, load_or_train_default_sae
from course_lib.sae.fast_grads import topk_grads_autograd, topk_grads_fast
from course_lib.sae.harvest import HarvestConfig, load_or_harvest
from course_lib.sae.model import (
    KINDS,
    SAEConfig,
    SAEKind,
    SparseAutoencoder,
    batchtopk_loss,
    geometric_median,
    jumprelu_loss,
    nmse,
    relu_loss,
    sae_loss,
    topk_loss,
)
from course_lib.sae.saelens_io import load_saelens, save_saelens
from course_lib.sae.store import ActivationStore, write_store
from course_lib.sae.training import (
    SAETrainConfig,
    TrainHistory,
    load_or_train,
    train_on_store,
    train_sae,
    train_step,
)

__all__ = [
    "KINDS", "ActivationStore", "DefaultSAE", "HarvestConfig", "SAEConfig", "SAEKind", "SAETrainConfig",
    "SparseAutoencoder", "TrainHistory", "batchtopk_loss", "controls", "dashboards", "default", "default_configs",
    "evaluation", "exercises", "fast_grads", "geometric_median", "harvest", "jumprelu_loss", "load_or_harvest",
    "load_or_train", "load_or_train_default_sae", "load_saelens", "model", "nmse", "notebook", "plots", "recovery",
    "relu_loss",
    "sae_loss", "saelens_io", "save_saelens", "steering", "store", "synthetic",
    "topk_grads_autograd", "topk_grads_fast", "topk_loss", "train_on_store", "train_sae", "train_step",
    "training", "widgets", "write_store",
]
