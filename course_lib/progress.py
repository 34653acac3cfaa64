"""Progress bars that suit an unattended run.

The library's loops use ``tqdm.auto``. In JupyterLab that is a live widget bar. Headless (the runner
and the tests set ``COURSE_LIB_HEADLESS=1``) a widget bar would leave dozens of widget views in the
executed notebook, so :func:`install_headless_tqdm` swaps in :class:`HeadlessTqdm`:

- while it runs, one text line at most every ``mininterval`` seconds (15 by default) goes to the
  file named by ``$COURSE_LIB_PROGRESS_FILE`` (the runner echoes it to the terminal);
- when it closes, exactly one line (its final state) goes to the notebook's output.

Importing ``course_lib`` installs it when headless, before any lesson module binds ``tqdm``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import tqdm.auto
import tqdm.std

PROGRESS_FILE_ENV = "COURSE_LIB_PROGRESS_FILE"


class _ProgressFile:
    """A write-only text sink appending finished lines to ``$COURSE_LIB_PROGRESS_FILE`` (if set)."""

    def __init__(self) -> None:
        self.path = os.environ.get(PROGRESS_FILE_ENV) or None

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line and self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError:
                pass
        return len(text)

    def flush(self) -> None:
        pass


class HeadlessTqdm(tqdm.std.tqdm):
    """A text bar: periodic lines to the progress file, one final line to the notebook."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file"] = _ProgressFile()
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0) or 0), 15.0)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        was_open = not self.disable and not getattr(self, "_closed_once", False)
        super().close()
        if was_open:
            self._closed_once = True
            sys.stderr.write(self.__str__() + "\n")


def install_headless_tqdm() -> None:
    """Make ``tqdm.auto.tqdm`` (and ``tqdm.auto.trange``) the headless text bar."""
    tqdm.auto.tqdm = HeadlessTqdm  # type: ignore[misc]
    tqdm.auto.trange = lambda *a, **k: HeadlessTqdm(range(*a), **k)  # type: ignore[assignment]
