"""Notebook 05, the capstone: are a weight-sparse model's units more explainable than a dense model's neurons?

Modules, one concept each: ``matching`` (dense and sparse models of notebook 02's reference set at matched
pretraining loss), ``units`` (neurons, residual channels and random directions of a model, their polarity),
``dictionary`` (a TopK SAE on the dense model's channels), ``explain`` (records on two splits, the statistics
explainer, three offline scorers and their gates), ``compare`` (class means and paired differences with
intervals over units and seeds), ``activity`` (activation sparsity, top-token and top-bigram shares),
``study`` (one matched pair end to end), ``circuit_view`` (how many of a task circuit's units are explained),
``plots``, ``widgets``, ``exercises`` (the notebook's checkers) and ``notebook`` (05's parameters, prose and
metrics).
"""

from course_lib.capstone import (
    activity,
    circuit_view,
    compare,
    dictionary,
    exercises,
    explain,
    matching,
    notebook,
    plots,
    study,
    units,
    widgets,
)

__all__ = ["activity", "circuit_view", "compare", "dictionary", "exercises", "explain", "matching", "notebook",
           "plots", "study", "units", "widgets"]
