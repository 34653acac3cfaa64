"""Execute the course notebooks with papermill (the runner); :mod:`course_lib.report` renders the report.

    python -m course_lib.cli run [NOTEBOOK ...] --profile workshop --out outputs
    python -m course_lib.cli report --out outputs

``run`` executes each notebook (default: every ``notebooks/NN_*.ipynb``; ``02`` selects by number)
headless (``COURSE_LIB_HEADLESS=1``: widgets render their first view statically, progress bars are
text) into a temporary folder ``<out>/.<stem>.running`` with ``PROFILE``, ``SEED``, ``DEVICE`` and
``OUT_DIR`` injected. Only a notebook that succeeds replaces ``<out>/<stem>/``; a failed one leaves
the previous good outputs in place, adds ``last_failure.json`` beside them (the report shows it as
a banner) and keeps its partial run in ``<out>/_failed/<stem>/``.

Safety nets: every cell has a timeout from the profile (:data:`CELL_TIMEOUT_S`), and a cell whose
kernel went idle without its execute reply arriving for :data:`STALL_S` seconds fails as stalled.
Either failure names the cell's index and source on the console and in the report. While it runs,
the terminal shows the notebook, the cell, and the library's progress lines (at least every 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from course_lib import runtime
from course_lib.report import build_report, default_notebooks, render_html

KERNEL = "mechinterp-course"  # registered by `make setup`; see Makefile
CELL_TIMEOUT_S = {"smoke": 300, "workshop": 900, "full": 6 * 3600}
STALL_S = 60.0


class CellStalled(RuntimeError):
    """The kernel reported the cell idle, but its execute reply never reached the executor."""


@dataclass(frozen=True)
class NotebookResult:
    stem: str
    ok: bool
    wall_time_s: float
    error: str | None = None  # the failing cell and its error, for the console and the report
    cell_index: int | None = None  # index of the failing cell in the executed notebook


def select_notebooks(names: list[str]) -> list[Path]:
    """Notebook paths from paths, stems or number prefixes (``02``); unknown names raise ValueError."""
    if not names:
        return default_notebooks()
    known = default_notebooks()
    picked: list[Path] = []
    for name in names:
        p = Path(name)
        if p.suffix == ".ipynb" and p.exists():
            picked.append(p)
            continue
        hits = [nb for nb in known if nb.stem == name or nb.stem.startswith(f"{name}_") or nb.name == name]
        if not hits:
            valid = ", ".join(nb.stem[:2] for nb in known)
            raise ValueError(f"no notebook {name!r}; valid: {valid} (or a path to an .ipynb)")
        picked += hits
    return list(dict.fromkeys(picked))


# --------------------------------------------------------------------------- executor


def _make_engine(stem: str, n_cells: int, echo: Callable[[str], None] | None, stall_s: float, state: dict):
    """A papermill engine whose nbclient detects stalls and reports each cell as it starts.

    ``state`` receives the index and source of the cell being executed (for failure messages).
    """
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.utils import merge_kwargs, remove_args

    class WatchedClient(PapermillNotebookClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._idle_at: dict[str, float] = {}
            self._started = time.monotonic()

        def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
            content = msg.get("content", {})
            if msg.get("msg_type") == "status" and content.get("execution_state") == "idle":
                self._idle_at[msg.get("parent_header", {}).get("msg_id", "")] = time.monotonic()
            return super().process_message(msg, cell, cell_index)

        async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
            reply = asyncio.ensure_future(super()._async_poll_for_reply(
                msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive))
            while True:
                done, _ = await asyncio.wait({reply}, timeout=1.0)
                if done:
                    return reply.result()
                idle = self._idle_at.get(msg_id)
                if idle is not None and time.monotonic() - idle > stall_s:
                    reply.cancel()
                    task_poll_kernel_alive.cancel()
                    raise CellStalled(
                        f"the kernel finished the cell but its reply never arrived for {stall_s:.0f} s "
                        "(stall detected; a widget or output capture may be blocking the executor)")

    def on_cell_execute(cell: Any, cell_index: int) -> None:
        state.update(cell_index=cell_index, source=cell.source)
        if echo is None or cell.cell_type != "code":
            return
        first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
        echo(f"{stem}  cell {cell_index + 1}/{n_cells}  {first[:70]}")

    class WatchedEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log_output=log_output, stdout_file=stdout_file,
                                 stderr_file=stderr_file, on_cell_execute=on_cell_execute)
            from papermill.engines import logger

            return WatchedClient(nb_man, log=logger, **final).execute()

    return WatchedEngine


def _describe_failure(exc: BaseException, state: dict) -> tuple[str, int | None]:
    """A console/report description of a failure, and the failing cell's index when known.

    ``state`` holds the cell that was executing (timeouts and stalls carry no cell of their own).
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        source = "\n".join("    " + line for line in str(exc.source).splitlines()[:25])
        return (f"cell {exc.cell_index} (execution count {exc.exec_count}) failed:\n{source}\n"
                f"{exc.ename}: {exc.evalue}", exc.cell_index)
    index, source = state.get("cell_index"), state.get("source", "")
    where = ""
    if index is not None:
        src = "\n".join("    " + line for line in source.splitlines()[:25])
        where = f"cell {index} did not finish:\n{src}\n"
    kind = "Timeout" if "timeout" in type(exc).__name__.lower() else type(exc).__name__
    return f"{where}{kind}: {exc}".strip(), index


class _ProgressEcho:
    """Tails the kernel's progress file and echoes new lines to the terminal, prefixed by the notebook."""

    def __init__(self, path: Path, prefix: str, echo: Callable[[str], None]):
        self.path, self.prefix, self.echo = path, prefix, echo
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ProgressEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain()

    _pos = 0

    def _drain(self) -> None:
        try:
            with self.path.open("r", encoding="utf-8", errors="replace") as f:
                f.seek(self._pos)
                for line in f.read().splitlines():
                    self.echo(f"{self.prefix}    {line}")
                self._pos = f.tell()
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self._drain()


def _prepare(notebook: Path, repeat_tag: tuple[str, int] | None, work: Path) -> Path:
    """The notebook to execute: the source, or a copy in ``work`` whose cells tagged ``tag`` repeat ``n`` times."""
    if repeat_tag is None:
        return notebook
    import nbformat

    tag, n = repeat_tag
    nb = nbformat.read(notebook, as_version=4)
    cells = []
    for c in nb.cells:
        copies = n if tag in c.get("metadata", {}).get("tags", []) else 1
        for i in range(copies):
            d = nbformat.from_dict(json.loads(json.dumps(c)))
            if i:
                d["id"] = f"{c.get('id', 'c')}-r{i}"[:64]
            cells.append(d)
    nb.cells = cells
    tmp = work / f".{notebook.stem}.source.ipynb"  # never beside the notebooks: a killed run leaves nothing there
    nbformat.write(nb, tmp)
    return tmp


def execute_notebook(
    notebook: Path, out: Path, profile: str, seed: int = 0, device: str = "auto", kernel: str | None = KERNEL,
    extra_parameters: dict | None = None, echo: Callable[[str], None] | None = print,
    cell_timeout_s: float | None = None, stall_s: float = STALL_S, repeat_tag: tuple[str, int] | None = None,
    headless: bool = True,
) -> NotebookResult:
    """Run one notebook headless into ``out/<stem>/`` (swapped in on success); never raises for a failure.

    ``kernel=None`` uses the notebook's own kernelspec. ``repeat_tag=("widget", 20)`` executes every
    cell tagged ``widget`` 20 times in a row (the hang test). ``headless=False`` lets explorers build
    their live widgets (as in JupyterLab) although no front end is attached: the tests use it to show
    that live widgets do not stall the executor either.
    """
    import papermill
    from papermill.engines import papermill_engines

    runtime.check_profile(profile)
    stem = notebook.stem
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    final, work = out / stem, out / f".{stem}.running"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    executed = work / f"{stem}.ipynb"
    progress_file = work / ".progress.log"
    params = {"PROFILE": profile, "SEED": seed, "DEVICE": device, "OUT_DIR": str(work)}
    params.update(extra_parameters or {})
    timeout = cell_timeout_s if cell_timeout_s is not None else CELL_TIMEOUT_S[profile]
    source = _prepare(notebook, repeat_tag, work)
    n_cells = len(json.loads(source.read_text()).get("cells", [])) + 1  # + papermill's injected cell
    engine = f"course-{stem}"
    state: dict[str, Any] = {}
    papermill_engines.register(engine, _make_engine(stem, n_cells, echo, stall_s, state))
    env = {runtime.HEADLESS_ENV: "1" if headless else "0", "COURSE_LIB_PROGRESS_FILE": str(progress_file),
           # OpenMP threads that spin while waiting made torch up to 10x slower on a busy 2-core machine
           # (measured with 2 other jobs: explaining 6 units 33 s -> 12 s); the kernel must get this before torch loads.
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    start = time.perf_counter()
    error, cell_index = None, None
    try:
        with runtime.temporary_env(**env), _ProgressEcho(progress_file, stem, echo or (lambda s: None)):
            papermill.execute_notebook(
                str(source), str(executed), parameters=params, kernel_name=kernel, engine_name=engine,
                cwd=str(notebook.parent), progress_bar=False, start_timeout=120, execution_timeout=timeout,
            )
    except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
        error, cell_index = _describe_failure(exc, state)
    finally:
        if source != notebook:
            source.unlink(missing_ok=True)
    wall = round(time.perf_counter() - start, 1)
    progress_file.unlink(missing_ok=True)
    if executed.exists():
        render_html(executed, out)
    result = NotebookResult(stem=stem, ok=error is None, wall_time_s=wall, error=error, cell_index=cell_index)
    # A run is known by its id, never by its end time: two runs can end in the same second.
    record = asdict(result) | {"run_id": uuid.uuid4().hex, "profile": profile,
                               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    runtime.atomic_write_text(work / "run.json", json.dumps(record, indent=2))
    if result.ok:
        old = out / f".{stem}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        failed = out / "_failed" / stem
        shutil.rmtree(failed, ignore_errors=True)
        failed.parent.mkdir(parents=True, exist_ok=True)
        work.rename(failed)
        final.mkdir(exist_ok=True)
        if not (final / "run.json").exists():  # no good run to keep: record this one
            runtime.atomic_write_text(final / "run.json", json.dumps(record, indent=2))
        runtime.atomic_write_text(final / "last_failure.json", json.dumps(record | {"partial_run": str(failed)}, indent=2))
    return result


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute notebooks with papermill and build the report")
    run_p.add_argument("notebooks", nargs="*", help="paths, stems or numbers (02); default: every notebook")
    run_p.add_argument("--profile", default="workshop", choices=runtime.PROFILES)
    run_p.add_argument("--out", type=Path, default=Path("outputs"))
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--device", default="auto", choices=runtime.DEVICES)
    run_p.add_argument("--kernel", default=KERNEL)
    run_p.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default: by profile)")
    rep_p = sub.add_parser("report", help="rebuild <out>/index.html from what is there")
    rep_p.add_argument("--out", type=Path, default=Path("outputs"))
    args = parser.parse_args(argv)

    if args.command == "report":
        print(build_report(args.out))
        return 0
    try:
        notebooks = select_notebooks([str(n) for n in args.notebooks])
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if not notebooks:
        print("no notebooks found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def echo(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {line}", flush=True)

    results = []
    for i, nb in enumerate(notebooks, 1):
        echo(f"=== {nb.stem} ({i}/{len(notebooks)}, profile {args.profile})")
        res = execute_notebook(nb, args.out, args.profile, args.seed, args.device, args.kernel, echo=echo,
                               cell_timeout_s=args.cell_timeout)
        results.append(res)
        echo(f"{'ok' if res.ok else 'FAILED':6s} {res.stem}  {res.wall_time_s:.1f} s")
        if res.error:
            print(f"--- {res.stem}: {res.error}", flush=True)
        build_report(args.out)
    report = build_report(args.out)
    failed = [r for r in results if not r.ok]
    print(f"\nreport: {report.resolve()}")
    print(f"{len(results) - len(failed)} notebooks passed, {len(failed)} failed, {time.perf_counter() - t0:.0f} s in all")
    for r in failed:
        print(f"\nFAILED {r.stem}:\n{r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
