"""Notebook 00: looking inside a real LM (next-token predictions, logit lens, residual norms, ablations).

``predictions`` (the functions), ``plots`` (their figures). The functions are re-exported here:
``lens.top_next_tokens``, ``lens.logit_lens``...
"""

from course_lib.lens import plots, predictions, widgets
from course_lib.lens.predictions import (
    Prediction,
    ablation_losses,
    logit_lens,
    residual_norms,
    token_loss,
    top_next_tokens,
)

__all__ = ["Prediction", "ablation_losses", "logit_lens", "plots", "widgets", "predictions", "residual_norms",
           "token_loss", "top_next_tokens"]
