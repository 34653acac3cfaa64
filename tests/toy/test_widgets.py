"""course_lib.toy.widgets: the explorer's first view is a trained model's picture; other settings give another."""

from __future__ import annotations

import dataclasses

from course_lib import toy
from course_lib.toy.widgets import ToyExplorer, ToySettings


def test_first_view_then_a_new_setting_trains_a_new_model():
    tc = toy.ToyTrainConfig(steps=60, batch_size=64, lr=1e-2)
    ex = ToyExplorer(tc, seed=0)
    first = ex.png
    assert first.startswith(b"\x89PNG") and ex.seconds > 0
    ex.render(dataclasses.replace(ToySettings(), n_features=6, sparsity=0.0))
    assert ex.png != first
    assert "6 features -> 5 dims" in ex.figure.axes[0].get_title() or "6 features" in str(ex.figure._suptitle.get_text())
