"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 (started here)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from course_lib.autointerp import backends, explainers, pipeline, records, results

SECRET = "sk-test-SECRET-do-not-leak-1234567890"


class _Server:
    """Serves a scripted list of (status, body) replies to POST /v1/chat/completions, then 200s."""

    def __init__(self, script=(), delay=0.0, reply="the keyword def."):
        self.script = list(script)
        self.delay = delay
        self.reply = reply
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.auth.append(self.headers.get("Authorization"))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    step = outer.script.pop(0) if outer.script else None
                time.sleep(outer.delay)
                with outer.lock:
                    outer.in_flight -= 1
                if self.path != "/v1/chat/completions":
                    step = (404, {"error": "not found"})
                if step is None:
                    step = (200, {"choices": [{"message": {"role": "assistant", "content": outer.reply}}]})
                status, payload = step
                data = json.dumps(payload).replace("$AUTH", str(self.headers.get("Authorization"))).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _client(url, env="AUTOINTERP_TEST_KEY", **kw):
    cfg = backends.ChatConfig(base_url=url, model="test-model", api_key_env=env, timeout_s=5,
                              backoff_s=0.01, max_backoff_s=0.05, **kw)
    return backends.ChatClient(cfg)


MSGS = [{"role": "user", "content": "hi"}]


def test_success_sends_model_messages_and_bearer_key(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    with _Server() as srv:
        c = _client(srv.url)
        assert c.complete(MSGS) == "the keyword def."
    assert srv.requests[0]["model"] == "test-model" and srv.requests[0]["messages"] == MSGS
    assert srv.auth == [f"Bearer {SECRET}"]
    assert SECRET not in repr(c) and SECRET not in str(vars(c))


def test_429_then_success_is_retried(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    with _Server(script=[(429, {"error": "slow down"}), (503, {"error": "busy"})]) as srv:
        c = _client(srv.url)
        assert c.complete(MSGS) == "the keyword def."
    assert len(srv.requests) == 3 and c.n_requests == 3


def test_401_raises_clear_error_without_retry_or_key(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    with _Server(script=[(401, {"error": "bad key $AUTH"})]) as srv:
        c = _client(srv.url)
        with pytest.raises(backends.AuthenticationError) as info:
            c.complete(MSGS)
    assert len(srv.requests) == 1  # not retried
    msg = str(info.value)
    assert "401" in msg and "AUTOINTERP_TEST_KEY" in msg
    assert SECRET not in msg and SECRET not in repr(info.value)


def test_missing_key_env_is_named(monkeypatch):
    monkeypatch.delenv("AUTOINTERP_TEST_KEY", raising=False)
    with _Server(script=[(401, {"error": "no key"})]) as srv:
        with pytest.raises(backends.AuthenticationError, match="AUTOINTERP_TEST_KEY is not set"):
            _client(srv.url).complete(MSGS)
    assert srv.auth == [None]


def test_persistent_5xx_gives_up_after_bounded_tries(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    with _Server(script=[(500, {"error": "boom $AUTH"})] * 10) as srv:
        c = _client(srv.url, max_retries=2)
        with pytest.raises(backends.BackendError) as info:
            c.complete(MSGS)
    assert len(srv.requests) == 3  # 1 try + 2 retries, then stop
    assert "3 tries" in str(info.value) and SECRET not in str(info.value)


def test_backoff_is_exponential():
    waits = []
    c = backends.ChatClient(backends.ChatConfig(base_url="http://127.0.0.1:9", backoff_s=1.0,
                                                max_backoff_s=5.0, max_retries=4, timeout_s=0.5),
                            sleep=waits.append)
    with pytest.raises(backends.BackendError):
        c.complete(MSGS)  # nothing listens on port 9: connection errors, retried
    assert waits == [1.0, 2.0, 4.0, 5.0]


def test_concurrency_limit_and_per_request_errors(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    script = [(200, {"choices": [{"message": {"content": f"r{i}"}}]}) for i in range(3)]
    script += [(400, {"error": "bad request $AUTH"})]
    with _Server(script=script, delay=0.15) as srv:
        c = _client(srv.url, concurrency=2, max_retries=0)
        out = c.map([MSGS] * 6)
    assert srv.max_in_flight <= 2
    errors = [o for o in out if isinstance(o, backends.BackendError)]
    assert len(errors) == 1 and len(out) == 6  # the failure does not lose the finished ones
    assert SECRET not in str(errors[0])


def _def_unit():
    strings = ["x", " def", " f", "(", " def"]
    recs = [records.Record(i, "top", list(range(5)), strings, [0, 1.0, 0, 0, 1.0]) for i in range(3)]
    rnd = [records.Record(10 + i, "random", list(range(5)), ["a", "b", "c", "d", "e"], [0.0] * 5)
           for i in range(2)]
    return records.UnitRecords("token/def", "token", 1.0, recs[:1], recs[1:], rnd)


def test_api_key_never_in_saved_results_or_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    ur = _def_unit()
    dead = records.UnitRecords("x/dead", "neuron", 0.0, [], [], [])
    with _Server(script=[(500, {"error": "echo $AUTH"})] * 3 + [(200, {"choices": [{"message": {"content": ""}}]})]) as srv:
        ex = explainers.HTTPExplainer(_client(srv.url, max_retries=2, concurrency=1))
        expls = ex.explain_many([ur, ur, dead])
    assert expls[0].text is None and expls[0].reason.startswith("backend error")
    assert expls[1].text is None and expls[1].reason == "empty"
    assert expls[2].reason.startswith("dead unit")
    scorers = pipeline.Scorers(simulator=None, yes_no=None)
    res = [scorers.score(e, u) for e, u in zip(expls, [ur, ur, dead])]
    assert all(v is None for r in res for v in r.scores.values())
    path = results.save_jsonl(res, tmp_path / "r.jsonl")
    text = path.read_text()
    assert SECRET not in text and "Bearer" not in text.replace("Bearer ***", "")
    assert [r.reason for r in results.load_jsonl(path)] == [e.reason for e in expls]
    summary = results.summarise(results.load_jsonl(path))
    assert summary["token"]["n_missing"] == 2 and summary["token"]["correlation_keyword"]["n"] == 0
    torch.manual_seed(0)  # keep global RNG state deterministic for later tests
