"""course_lib.lens.widgets: the prompt explorer shows the model's top next tokens and a logit-lens row per layer."""

from __future__ import annotations

from course_lib.lens import widgets
from course_lib.lens.predictions import top_next_tokens


def test_prompt_explorer_shows_the_top_tokens_and_every_layer(smollm2):
    ex = widgets.prompt_explorer(smollm2, "The capital of France is", k=3)
    top = top_next_tokens(smollm2, "The capital of France is", 3)
    assert repr(top[0].token) in ex.html.replace("&#x27;", "'")
    assert ex.html.count("title='layer ") == smollm2.cfg.n_layers
    ex.render("1, 2, 3,")
    assert "1, 2, 3," in ex.html
