"""Notebook 00: looking inside a real LM (next-token predictions, logit lens, residual norms, ablations).

``predictions`` (the functions), ``sink`` (the attention sink against the BOS norm outlier), ``steering``
(adding a vector to the residual stream), ``plots`` (their figures), ``notebook`` (the Markdown that reads
them from the run), ``widgets``, ``exercises`` (the checkers of the notebook's exercises). The functions are re-exported here:
``lens.top_next_tokens``, ``lens.logit_lens``...
"""

from course_lib.lens import exercises, notebook, plots, predictions, sink, steering, widgets
from course_lib.lens.predictions import (
    LensTrace,
    Prediction,
    ablation_losses,
    head_ablation_hook,
    logit_lens,
    logit_lens_probs,
    logit_lens_trace,
    ranked_costs,
    residual_norms,
    token_loss,
    top_next_tokens,
    zero_ablation_hook,
    zero_except_bos_hook,
)
from course_lib.lens.sink import SinkProfile, sink_profile
from course_lib.lens.steering import steering_hook

__all__ = ["LensTrace", "Prediction", "SinkProfile", "ablation_losses", "exercises", "head_ablation_hook", "logit_lens",
           "logit_lens_probs", "logit_lens_trace", "notebook", "plots", "predictions", "ranked_costs",
           "residual_norms", "sink", "sink_profile", "steering", "steering_hook", "token_loss", "top_next_tokens",
           "widgets", "zero_ablation_hook", "zero_except_bos_hook"]
