"""A hostile OpenAI-compatible server on 127.0.0.1 (raw sockets, started here): bad bodies,
truncated bodies, non-HTTP replies, trickled bytes, echoed Authorization headers.

None of them may lose the other units' answers, hold a request past its deadline, or put the
(fake) key into any message, exception, saved file or captured output.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time

import pytest

from course_lib.autointerp import backends, explainers, pipeline, records, results

SECRET = "sk-fake-0123456789abcdefghijklmnopqrstuvwxyzQWERTYUIOP"
ENV = "HARDENING_TEST_KEY"
MSGS = [{"role": "user", "content": "hi"}]


def _ok_body(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def _http(status: int, body: bytes, length: int | None = None, reason: str = "X") -> bytes:
    n = len(body) if length is None else length
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


class HostileServer:
    """Answers each POST with the next scripted behaviour (then ``ok``).

    Behaviours: ``ok``; ``latin1`` (a JSON body encoded as Latin-1, invalid UTF-8); ``truncated``
    (Content-Length larger than what is sent, then close); ``not_http`` (a line that is no status
    line); ``trickle`` (a valid answer, one byte every 0.4 s); ``echo`` (200 whose content is the
    request's Authorization header); ``error_echo`` (HTTP 400 whose body puts the header across
    character 300: the key starts at 290); ``auth_echo`` (401, same body).
    """

    def __init__(self, script=()):
        self.script = list(script)
        self.lock = threading.Lock()
        self.seen: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                headers = {}
                self.rfile.readline()
                while True:
                    line = self.rfile.readline().decode("latin-1").strip()
                    if not line:
                        break
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                self.rfile.read(int(headers.get("content-length", "0")))
                auth = headers.get("authorization", "")
                with outer.lock:
                    step = outer.script.pop(0) if outer.script else "ok"
                    outer.seen.append(step)
                try:
                    self.wfile.write(outer.reply(step, auth))
                    if step == "trickle":
                        for b in _http(200, _ok_body("a trickled answer " * 5)):
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                            time.sleep(0.4)
                except OSError:  # the client gave up (deadline): fine
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self.srv = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    @staticmethod
    def reply(step: str, auth: str) -> bytes:
        if step == "ok":
            return _http(200, _ok_body("the keyword def."))
        if step == "latin1":
            return _http(200, '{"choices": [{"message": {"content": "caf\u00e9 \u00e0 la def."}}]}'.encode("latin-1"))
        if step == "truncated":
            body = _ok_body("this answer is cut")
            return _http(200, body[:20], length=len(body))
        if step == "not_http":
            return b"SSH-2.0-OpenSSH_9.0 not an http server\r\n"
        if step == "trickle":
            return b""
        if step == "echo":
            return _http(200, _ok_body(f"the header was {auth}."))
        if step in ("error_echo", "auth_echo"):
            body = json.dumps({"error": "e" * 267 + " got " + auth}).encode()
            return _http(400 if step == "error_echo" else 401, body)
        raise ValueError(step)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def _client(url, **kw):
    kw = {"timeout_s": 5, "max_retries": 0, "concurrency": 1, **kw}
    cfg = backends.ChatConfig(base_url=url, model="m", api_key_env=ENV, backoff_s=0.01, max_backoff_s=0.02, **kw)
    return backends.ChatClient(cfg)


def _unit(name: str) -> records.UnitRecords:
    strings = ["x", " def", " f", "(", " def"]
    recs = [records.Record(i, "top", list(range(5)), strings, [0, 1.0, 0, 0, 1.0]) for i in range(3)]
    rnd = [records.Record(10 + i, "random", list(range(5)), list("abcde"), [0.0] * 5) for i in range(2)]
    return records.UnitRecords(name, "token", 1.0, recs[:1], recs[1:], rnd)


def _no_secret_anywhere(*texts: str) -> None:
    for t in texts:
        for i in range(0, len(SECRET) - 7):  # no 8-character piece of the key either
            assert SECRET[i:i + 8] not in t, f"key fragment {SECRET[i:i + 8]!r} leaked in {t[:400]!r}"


@pytest.mark.parametrize("bad", ["latin1", "truncated", "not_http"])
def test_one_bad_reply_fails_only_its_unit(bad, monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    urs = [_unit(f"token/{i}") for i in range(4)]
    with HostileServer(["ok", "ok", bad, "ok"]) as srv:
        expls = explainers.HTTPExplainer(_client(srv.url)).explain_many(urs)
    assert srv.seen == ["ok", "ok", bad, "ok"]
    assert [e.ok for e in expls] == [True, True, False, True]
    assert expls[2].reason.startswith("backend error")
    assert all(e.text == "the keyword def." for e in (expls[0], expls[1], expls[3]))


@pytest.mark.parametrize("bad", ["latin1", "truncated", "not_http"])
def test_bad_reply_is_a_backend_error_and_is_retried(bad, monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    with HostileServer([bad, bad]) as srv:
        with pytest.raises(backends.BackendError):
            _client(srv.url).complete(MSGS)
        assert _client(srv.url, max_retries=1).complete(MSGS) == "the keyword def."  # bad, then ok


def test_map_never_raises_on_an_unforeseen_error(monkeypatch):
    c = _client("http://127.0.0.1:9")

    def explode(*a, **kw):
        raise UnicodeError("something nobody foresaw")

    monkeypatch.setattr(c, "_post", explode)
    out = c.map([MSGS, MSGS])
    assert len(out) == 2 and all(isinstance(o, backends.BackendError) for o in out)


@pytest.mark.parametrize("max_retries", [0, 1])
def test_timeout_is_a_total_deadline_per_request(max_retries, monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    with HostileServer(["trickle"] * 3) as srv:
        c = _client(srv.url, timeout_s=2, max_retries=max_retries)
        t0 = time.monotonic()
        with pytest.raises(backends.BackendError, match="timeout_s=2"):
            c.complete(MSGS)
        elapsed = time.monotonic() - t0
    assert elapsed < 6 * (max_retries + 1), f"a 2 s request took {elapsed:.1f} s"


def test_error_body_is_redacted_before_it_is_shortened(monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    with HostileServer(["error_echo", "auth_echo"]) as srv:
        with pytest.raises(backends.BackendError) as err1:
            _client(srv.url).complete(MSGS)
        with pytest.raises(backends.AuthenticationError) as err2:
            _client(srv.url).complete(MSGS)
    assert "HTTP 400" in str(err1.value) and "HTTP 401" in str(err2.value)
    _no_secret_anywhere(str(err1.value), repr(err1.value), str(err2.value), repr(err2.value))


def test_echoed_key_never_reaches_explanations_or_saved_results(monkeypatch, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(ENV, SECRET)
    urs = [_unit("token/a"), _unit("token/b")]
    with HostileServer(["echo", "echo"]) as srv:
        c = _client(srv.url)
        expls = explainers.HTTPExplainer(c).explain_many(urs)
        direct = _client(srv.url).complete(MSGS)
    assert expls[0].ok and "Bearer ***" in expls[0].raw  # the answer is kept, the key is not
    scorers = pipeline.Scorers(simulator=None, yes_no=None)
    res = [scorers.score(e, u) for e, u in zip(expls, urs)]
    path = results.save_jsonl(res, tmp_path / "results.jsonl")
    out = capsys.readouterr()
    _no_secret_anywhere(direct, path.read_text(), *(repr(e) for e in expls), out.out, out.err, caplog.text,
                        repr(c), str(vars(c)))


def test_redact_covers_json_escaped_forms():
    key = "sk-a/b\"c"
    assert backends.redact(json.dumps({"k": key}), [key]) == '{"k": "***"}'
    assert backends.redact("x sk-a\\/b\\\"c y", [key]) == "x *** y"
