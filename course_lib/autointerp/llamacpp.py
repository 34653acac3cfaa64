"""Start llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server`` from ``llama-cpp-python[server]``)
on 127.0.0.1 as a subprocess, serving the SmolLM2 GGUF the course ships.

The server lives in a venv of its own (``.llamacpp-venv``, built by ``bench/llamacpp_venv.sh``; `make test`
builds it). The test suite (``tests/autointerp/test_server_real.py``) and ``bench/bench_autointerp.py`` start
it with :func:`start_server`, which picks a free port, waits until ``/v1/models`` answers, and raises
:class:`ServerStartError` with the tail of the server's stderr when it does not. ``--logits_all true`` is
needed for any log-probabilities (``echo`` on completions, ``logprobs`` on chat).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from course_lib import lm

MODEL_ALIAS = "smollm2"  # the name the server answers to (``ChatConfig.model``)


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message carries the command and its stderr."""


@dataclasses.dataclass
class LocalServer:
    """A running server: ``base_url`` (``http://127.0.0.1:<port>/v1``); :meth:`stop` (or ``with``) ends it."""

    process: subprocess.Popen
    base_url: str
    log: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def venv_python(venv: str | Path) -> Path | None:
    """The venv's python when the venv is complete (its ``.installed`` stamp exists), else ``None``."""
    python, stamp = Path(venv) / "bin" / "python", Path(venv) / ".installed"
    return python if python.exists() and stamp.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no stderr)"


def start_server(python: str | Path, log: str | Path, model_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int = 2, timeout_s: float = 60.0) -> LocalServer:
    """Start the server with ``python`` (the server venv's) on a free port; return once it answers.

    ``model_path``: a GGUF file (default: the shipped SmolLM2, :func:`course_lib.lm.smollm2_gguf_path`);
    ``log``: where its stderr goes. A port taken between choosing and binding is retried (3 tries).
    """
    log = Path(log)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    model = str(model_path or lm.smollm2_gguf_path())
    for _ in range(3):
        port = _free_port()
        cmd = [str(python), "-m", "llama_cpp.server", "--model", model, "--model_alias", MODEL_ALIAS,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
               "--logits_all", "true", "--verbose", "false"]
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return LocalServer(proc, url, log)
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise ServerStartError(f"the llama.cpp server did not answer on {url} within {timeout_s:.0f} s "
                                   f"({' '.join(cmd)}); its stderr:\n{_tail(log)}")
        if "address already in use" not in _tail(log).lower():
            break
    raise ServerStartError(f"the llama.cpp server exited with code {proc.returncode} ({' '.join(cmd)}); "
                           f"its stderr:\n{_tail(log)}")
