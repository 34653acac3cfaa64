"""course_lib.explorer: headless, an explorer shows its first view as static output and builds no widget."""

from __future__ import annotations

import IPython.display
import matplotlib.pyplot as plt

from course_lib import explorer


class _Probe(explorer.Explorer):
    built = 0

    def __init__(self) -> None:
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        self.html, self.png = "<b>first view</b>", explorer.fig_png(fig)

    def build(self):
        _Probe.built += 1
        return "live controls"


def test_headless_shows_static_html_and_png(monkeypatch):
    shown = []
    monkeypatch.setattr(explorer, "display", lambda obj: shown.append(obj))
    monkeypatch.setenv("COURSE_LIB_HEADLESS", "1")
    plt.close("all")  # figures other tests left open
    probe = _Probe()
    assert probe.png[:4] == b"\x89PNG" and not plt.get_fignums()  # rendered and closed
    probe._ipython_display_()
    assert [type(o) for o in shown] == [IPython.display.HTML, IPython.display.Image]
    assert _Probe.built == 0  # no widget was built
    monkeypatch.setenv("COURSE_LIB_HEADLESS", "0")
    probe._ipython_display_()
    assert _Probe.built == 1 and shown[-1] == "live controls"


def test_first_view_is_rendered_once_per_inputs_and_arguments():
    calls = []

    class _Counting(explorer.Explorer):
        def __init__(self, model, arg):
            explorer.first_view(self, (model,), (arg,), lambda: self.render(arg))

        def render(self, arg):
            calls.append(arg)
            self.html = f"view {arg}"

    model, other = object(), object()
    assert _Counting(model, 1).html == "view 1"
    assert _Counting(model, 1).html == "view 1" and calls == [1]  # remembered
    _Counting(model, 2)
    _Counting(other, 1)  # another object: rendered again, even with equal arguments
    assert calls == [1, 2, 1]
