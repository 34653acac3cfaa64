"""Notebook 00: looking inside a real LM (next-token predictions, logit lens, residual norms, ablations).

``predictions`` (the functions), ``plots`` (their figures), ``widgets``, ``exercises`` (the checkers
of the notebook's exercises). The functions are re-exported here:
``lens.top_next_tokens``, ``lens.logit_lens``...
"""

from course_lib.lens import exercises, plots, predictions, widgets
from course_lib.lens.predictions import (
    Prediction,
    ablation_losses,
    head_ablation_hook,
    logit_lens,
    logit_lens_probs,
    residual_norms,
    token_loss,
    top_next_tokens,
    zero_ablation_hook,
)

__all__ = ["Prediction", "ablation_losses", "exercises", "head_ablation_hook", "logit_lens", "logit_lens_probs",
           "plots", "predictions", "residual_norms", "token_loss", "top_next_tokens", "widgets", "zero_ablation_hook"]
