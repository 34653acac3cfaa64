"""course_lib.autointerp.llamacpp: starting and stopping a server process. The real llama.cpp server is tested in
test_server_real.py; here a real stand-in process (a few lines of Python serving /v1/models) checks the start-up
logic: the URL it returns answers, a process that dies is reported with its stderr, and the venv check."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from course_lib.autointerp import llamacpp

# Answers like llama_cpp.server on the port it is given (argv: ... --port P ...); exits at once when told to.
STANDIN = r'''
import http.server, sys
args = sys.argv
if "--model" in args and args[args.index("--model") + 1] == "broken":
    sys.stderr.write("error: failed to load model broken\n"); sys.exit(3)
port = int(args[args.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


@pytest.fixture()
def fake_python(tmp_path):
    """An executable that runs the stand-in whatever module it is asked for (``-m llama_cpp.server``)."""
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {script} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def test_start_returns_a_url_that_answers_and_stop_ends_the_process(fake_python, tmp_path):
    with llamacpp.start_server(fake_python, tmp_path / "log", model_path="m.gguf", timeout_s=20) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
        with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as r:
            assert r.status == 200
    assert srv.process.poll() is not None  # stopped on leaving the block


def test_a_server_that_exits_is_reported_with_its_command_and_stderr(fake_python, tmp_path):
    with pytest.raises(llamacpp.ServerStartError, match="exited with code 3") as e:
        llamacpp.start_server(fake_python, tmp_path / "log", model_path="broken", timeout_s=20)
    assert "failed to load model broken" in str(e.value) and "--model broken" in str(e.value)


def test_venv_python_needs_the_stamp(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    assert llamacpp.venv_python(tmp_path) is None
    (tmp_path / ".installed").write_text("x")
    assert llamacpp.venv_python(tmp_path) == tmp_path / "bin" / "python"
