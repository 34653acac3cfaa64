"""Exercises: one source notebook, two versions, and the explicit switch between learner and reference code.

**Marking a solution.** In a code cell of a source notebook (``notebooks/``), a solution region is
the lines between a ``# BEGIN SOLUTION hint: <text>`` line and a ``# END SOLUTION`` line, inside the
function the learner writes::

    def generate_batch(feature_probability, n_features, batch_size, generator):
        # BEGIN SOLUTION hint: torch.rand(...) < p[:, None, None] decides which features are present
        ...
        # END SOLUTION

:func:`generate` turns a source notebook into the learner version: each region becomes
``raise NotImplementedError("hint: <text>")`` at the region's indentation, and a markdown cell
right after the exercise cell holds the complete solution in a collapsed ``<details>`` block. A hint
written ``hint: <idea> | API: <api>`` has two tiers: the learner's cell then only points below it, and
the markdown cell opens with two collapsed hints, the idea first and the API second.
Everything else (parameters, prose, checks) is copied unchanged, so the learner version differs
from the source only where a learner writes code.

**Using the learner's code.** After the function, the exercise cell calls :func:`use`, which runs
the lesson's checker on the learner's function and returns it: later cells call what the learner
wrote. With ``use_reference=True`` (the notebook's ``USE_REFERENCE_SOLUTIONS`` parameter) it prints
``using the reference solution for <name>`` and returns the library's function instead: the one
print of the library, on purpose, so that a fallback is never silent. A wrong or unfinished answer
raises :class:`ExerciseError` with the checker's diagnosis, and the notebook stops at that cell.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?: hint: (?P<hint>.*))?$")
END = re.compile(r"^[ \t]*# END SOLUTION$")
NOT_ATTEMPTED = "not attempted yet: replace `raise NotImplementedError` with your code and run the cell again"
SOLUTION_SUMMARY = "Solution (try the exercise first; click to open)"


class ExerciseError(AssertionError):
    """The learner's answer is wrong or unfinished; the message says how."""


class MarkerError(ValueError):
    """A source cell's solution markers are malformed (unclosed, nested, or without a hint)."""


# --------------------------------------------------------------------------- helpers for the lessons' checkers


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    """Same shape and equal within ``tol`` (relative and absolute)."""
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=tol, atol=tol))


def tensor_of(name: str, out: object, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """The learner's return value as a tensor of ``shape``, else :class:`ExerciseError` saying what it was.

    For ``shape == ()`` a Python number or a one-element tensor is accepted.
    """
    if out is None:
        raise ExerciseError(f"{name} returned None: return the result (a missing `return`?)")
    if shape == () and isinstance(out, (int, float)):
        out = torch.tensor(float(out))
    if not isinstance(out, torch.Tensor):
        raise ExerciseError(f"{name} should return a torch.Tensor, got {type(out).__name__}")
    if shape == () and out.numel() == 1:
        out = out.reshape(())
    if tuple(out.shape) != shape:
        raise ExerciseError(f"{name} returned shape {tuple(out.shape)}; expected {shape} ({what})")
    return out


def diagnose(name: str, got: torch.Tensor, ref: torch.Tensor, wrong: dict[str, torch.Tensor]) -> None:
    """Return if ``got`` matches ``ref``; else raise the hint of the known wrong variant it matches, or say where it differs."""
    if close(got, ref):
        return
    for hint, variant in wrong.items():
        if close(got, variant):
            raise ExerciseError(f"{name}: {hint}")
    diff = (got.float() - ref.float()).abs()
    idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
    raise ExerciseError(
        f"{name}: wrong values; e.g. at index {idx} you return {float(got[idx]):.4f}, the reference "
        f"gives {float(ref[idx]):.4f} (max abs difference {float(diff.max()):.3g})"
    )


# --------------------------------------------------------------------------- using the learner's code


def use(name: str, learner: F, reference: F, checker: Callable[[F], str], use_reference: bool = False) -> F:
    """The function later cells should call: the learner's once ``checker`` accepts it, else an error.

    ``use_reference=True`` prints "using the reference solution for <name>" and returns ``reference``
    without checking the learner's code. Otherwise ``checker(learner)`` runs: a "correct" message is
    printed and ``learner`` returned; an unfinished stub or a wrong answer raises
    :class:`ExerciseError` (the diagnosis, plus how to fall back).
    """
    if use_reference:
        print(f"using the reference solution for {name}")
        return reference
    hints: list[str] = []

    @functools.wraps(learner)
    def probe(*args: Any, **kwargs: Any) -> Any:  # remembers the stub's hint for the message
        try:
            return learner(*args, **kwargs)
        except NotImplementedError as e:
            hints.append(str(e))
            raise

    message = checker(probe)  # type: ignore[arg-type]
    if message == NOT_ATTEMPTED:
        hint = f" ({hints[0]})" if hints and hints[0] else ""
        raise ExerciseError(f"{name}: {NOT_ATTEMPTED}{hint}; or set USE_REFERENCE_SOLUTIONS to True in the "
                            "parameters cell to run on the reference solution")
    print(message)
    return learner


# --------------------------------------------------------------------------- generating learner versions


def _lines(source: str | list[str]) -> list[str]:
    return (source if isinstance(source, str) else "".join(source)).split("\n")


API_MARK = " | API: "
HINTS_BELOW = "hint: two collapsed hints are below this cell, the idea first and then the API"


def hint_tiers(hint: str) -> tuple[str, str | None]:
    """``(idea, api)`` of a marker's hint: ``hint: <idea> | API: <api>`` gives two tiers, shown to the learner in
    two collapsed blocks (the idea first); a hint without `` | API: `` is one tier, ``api`` None."""
    idea, sep, api = hint.partition(API_MARK)
    return (idea.strip(), api.strip()) if sep else (hint.strip(), None)


def split_solution(source: str | list[str]) -> tuple[str, str] | None:
    """``(learner_source, solution_source)`` of one code cell, or None when it holds no solution region."""
    learner, solution = [], []
    region: tuple[str, str] | None = None  # (indent, hint) inside a region
    found = False
    for i, line in enumerate(_lines(source)):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if region is not None:
                raise MarkerError(f"line {i + 1}: BEGIN SOLUTION inside another solution region")
            if not (begin["hint"] or "").strip():
                raise MarkerError(f"line {i + 1}: write a hint after the marker: '# BEGIN SOLUTION hint: ...'")
            region, found = (begin["indent"], begin["hint"].strip()), True
            idea, api = hint_tiers(region[1])
            message = f"hint: {idea}" if api is None else HINTS_BELOW
            learner.append(f"{region[0]}raise NotImplementedError({message!r})")
        elif end:
            if region is None:
                raise MarkerError(f"line {i + 1}: END SOLUTION without BEGIN SOLUTION")
            region = None
        else:
            solution.append(line)
            if region is None:
                learner.append(line)
    if region is not None:
        raise MarkerError("a BEGIN SOLUTION region is never closed by '# END SOLUTION'")
    return ("\n".join(learner), "\n".join(solution)) if found else None


def _source_list(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def generate(notebook: dict[str, Any]) -> dict[str, Any]:
    """The learner version of a source notebook (nbformat 4 JSON as a dict); the input is not modified."""
    out = copy.deepcopy(notebook)
    cells = []
    for cell in out["cells"]:
        split = split_solution(cell["source"]) if cell["cell_type"] == "code" else None
        if split is None:
            cells.append(cell)
            continue
        tiers = [hint_tiers(m["hint"] or "") for line in _lines(cell["source"]) if (m := BEGIN.match(line))]
        learner, solution = split
        cell["source"] = _source_list(learner)
        cells.append(cell)
        hints = "".join(f"<details>\n<summary>Hint 1: the idea</summary>\n\n{idea}\n\n</details>\n\n"
                        f"<details>\n<summary>Hint 2: the API</summary>\n\n```python\n{api}\n```\n\n</details>\n\n"
                        for idea, api in tiers if api is not None)
        details = (hints + f"<details>\n<summary>{SOLUTION_SUMMARY}</summary>\n\n```python\n{solution.rstrip()}\n```"
                   "\n\n</details>")
        md = {"cell_type": "markdown", "metadata": {}, "source": _source_list(details)}
        if "id" in cell:
            md["id"] = f"{cell['id']}-solution"[:64]
        cells.append(md)
    out["cells"] = cells
    return out


def has_exercises(notebook: dict[str, Any]) -> bool:
    return any(c["cell_type"] == "code" and split_solution(c["source"]) for c in notebook["cells"])


def dumps(notebook: dict[str, Any]) -> str:
    """The repository's notebook format: JSON, indent 1, UTF-8 kept, trailing newline."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def learner_path(source: Path, exercises_dir: Path) -> Path:
    return exercises_dir / source.name


def generate_file(source: Path, exercises_dir: Path) -> Path:
    """Write the learner version of ``source`` into ``exercises_dir``; return its path."""
    text = dumps(generate(json.loads(source.read_text(encoding="utf-8"))))
    target = learner_path(source, exercises_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def sources_with_exercises(notebooks_dir: Path) -> list[Path]:
    return [p for p in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
            if has_exercises(json.loads(p.read_text(encoding="utf-8")))]
