"""An OpenAI-compatible HTTP client (stdlib only) for hosted or self-served LLMs: chat and completions.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "max_tokens", "temperature"}``
and ``Authorization: Bearer <key>``; the answer is ``choices[0].message.content``
(:meth:`ChatClient.complete`; :meth:`ChatClient.chat_choice` for the whole choice, log-probabilities
included). ``POST {base_url}/completions`` with ``{"model", "prompt", ...}`` (text or token ids;
:meth:`ChatClient.completion_choice`) serves the all-at-once simulator's prompt log-probabilities
(:mod:`course_lib.autointerp.remote`). This is the API of OpenAI and of self-served engines (vLLM
``--api-key``, llama.cpp's servers, Ollama's ``/v1``), so one client covers them all.

* The key is read from the environment variable *named* by ``api_key_env`` at request time; it is
  never stored on the object, never put in a message, exception, log or result, and
  :func:`redact` scrubs it from any text that passes through (server error bodies, before they are
  shortened, and every reply's text before it is parsed, in case a server echoes the
  ``Authorization`` header).
* ``timeout_s`` is a *total* deadline per HTTP request (connect, headers and body together): a
  server that trickles bytes cannot hold a request longer, because the socket is shut down when
  the time is up. Retries with exponential backoff (``backoff * 2**attempt``, honouring
  ``Retry-After``) on 429, 5xx and network errors, at most ``max_retries`` times; a 401/403 is not
  retried and raises :class:`AuthenticationError` saying which variable to set.
* Any bad reply (not UTF-8, truncated, not HTTP, not JSON) is a :class:`BackendError` for that
  request; :meth:`ChatClient.map` (:meth:`ChatClient.run_many` for any request) runs many requests
  with at most ``concurrency`` in flight and
  returns one result or :class:`BackendError` per request (a failed unit never loses the finished
  ones).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class BackendError(RuntimeError):
    """A request failed (after retries, if retryable). The message never contains the API key.

    ``status``: the HTTP status of a refused request (e.g. 422: the server rejected a field), else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthenticationError(BackendError):
    """401/403: the key is missing or wrong."""


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every non-empty secret (and its JSON-escaped forms) replaced by ``***``.

    Redact *before* shortening a text: a cut through a secret would leave its prefix unredacted.
    """
    for s in secrets:
        if s:
            escaped = json.dumps(s)[1:-1]
            for form in (s, escaped, escaped.replace("/", "\\/")):
                text = text.replace(form, "***")
    return text


class _Deadline:
    """Shuts down the sockets of one HTTP request when ``seconds`` have passed since :meth:`start`.

    Socket timeouts bound each read, not the request: a server sending one byte per read would
    otherwise hold the request indefinitely. Shut down, the socket's pending read returns at once.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:  # already closed, or detached by the TLS wrapper
            pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                self._shutdown(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _deadline_connection(base: type[http.client.HTTPConnection], deadline: _Deadline) -> Callable[..., http.client.HTTPConnection]:
    """``base`` (HTTP or HTTPS connection class) whose sockets are registered with ``deadline``."""

    class Connection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: object, **kwargs: object):
            super().__init__(*args, **kwargs)
            create = self._create_connection

            def create_and_register(*a: object, **kw: object) -> socket.socket:
                sock = create(*a, **kw)
                deadline.register(sock)  # the raw socket (TLS handshakes included)
                return sock

            self._create_connection = create_and_register

        def connect(self) -> None:
            super().connect()
            deadline.register(self.sock)  # the TLS-wrapped socket, for https

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_deadline_connection(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_deadline_connection(http.client.HTTPSConnection, self._deadline), req,
                            context=self._context)


@dataclasses.dataclass(frozen=True)
class ChatConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # ends before /chat/completions (OpenAI: https://api.openai.com/v1)
    model: str = "gpt-4o-mini"  # model name as the server knows it
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env var holding the key (None: no auth)
    timeout_s: float = 60.0  # total deadline per HTTP request (connect + headers + body)
    max_retries: int = 4  # retries after the first try, on 429 / 5xx / network errors
    backoff_s: float = 1.0  # first wait; doubles every retry
    max_backoff_s: float = 30.0  # cap on one wait
    concurrency: int = 4  # requests in flight at most (ChatClient.map)
    max_tokens: int = 120  # completion length
    temperature: float = 0.0  # sampling temperature


class ChatClient:
    """Chat completions over HTTP with retries; see the module docstring."""

    def __init__(self, cfg: ChatConfig, sleep: Callable[[float], None] = time.sleep):
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={cfg.base_url!r} must start with http:// or https://")
        self.cfg = cfg
        self._sleep = sleep
        self.n_requests = 0  # HTTP requests sent (retries included)

    def __repr__(self) -> str:  # never shows the key (it is not stored anyway)
        return f"ChatClient(base_url={self.cfg.base_url!r}, model={self.cfg.model!r}, api_key_env={self.cfg.api_key_env!r})"

    def _key(self) -> str | None:
        if self.cfg.api_key_env is None:
            return None
        return os.environ.get(self.cfg.api_key_env) or None

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        wait = self.cfg.backoff_s * (2**attempt)
        if retry_after:
            try:
                wait = max(wait, float(retry_after))
            except ValueError:
                pass
        self._sleep(min(wait, self.cfg.max_backoff_s))

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        """One HTTP POST within the total deadline: ``(status, body bytes, headers)`` for any status.

        Raises :class:`TimeoutError` when the deadline passed, network and protocol errors as raised.
        """
        deadline = _Deadline(self.cfg.timeout_s)
        opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with deadline:
            try:
                try:
                    with opener.open(req, timeout=self.cfg.timeout_s) as resp:
                        status, data, resp_headers = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as e:
                    try:
                        status, data, resp_headers = e.code, e.read(), e.headers
                    finally:
                        e.close()
            except Exception:
                if deadline.expired:
                    raise TimeoutError(f"no complete answer within timeout_s={self.cfg.timeout_s} s") from None
                raise
        if deadline.expired:  # the body may have been cut by the shutdown
            raise TimeoutError(f"no complete answer within timeout_s={self.cfg.timeout_s} s")
        return status, data, resp_headers

    def request(self, path: str, payload: dict[str, Any], max_retries: int | None = None) -> dict[str, Any]:
        """``POST {base_url}/{path}`` with ``payload`` (``model`` added): the reply's JSON object.

        Retries (``max_retries``, default the config's), deadline and errors as in the module docstring; the key is redacted from the reply's
        text before it is parsed, so no string in the result can hold it. Raises
        :class:`BackendError` (``status`` set for an HTTP error status) / :class:`AuthenticationError`.
        """
        key = self._key()
        body = json.dumps({"model": self.cfg.model, **payload}).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.cfg.base_url.rstrip("/") + "/" + path.lstrip("/")
        last = "no attempt"
        retries = self.cfg.max_retries if max_retries is None else max_retries
        for attempt in range(retries + 1):
            self.n_requests += 1
            retry_after = None
            try:
                status, data, resp_headers = self._post(url, body, headers)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                # OSError covers TimeoutError and ConnectionError; HTTPException: IncompleteRead,
                # BadStatusLine (a reply that is not HTTP), RemoteDisconnected...
                last = f"{type(e).__name__}: {redact(str(getattr(e, 'reason', e)), [key])}"[:300]
            else:
                if 200 <= status < 300:
                    try:
                        text = redact(data.decode("utf-8"), [key])
                        reply = json.loads(text)
                    except UnicodeDecodeError:
                        last = "response is not valid UTF-8"
                    except (json.JSONDecodeError, RecursionError):
                        last = "response is not JSON"
                    else:
                        if not isinstance(reply, dict):
                            raise BackendError(f"unexpected response shape from {self.cfg.base_url}: {text[:200]}")
                        return reply
                else:
                    detail = redact(data.decode("utf-8", "replace"), [key])[:300]
                    if status in (401, 403):
                        hint = (f"set the environment variable {self.cfg.api_key_env} to a valid key"
                                if self.cfg.api_key_env else "this server needs a key: set API_KEY_ENV")
                        if self.cfg.api_key_env and not key:
                            hint = f"environment variable {self.cfg.api_key_env} is not set"
                        raise AuthenticationError(f"HTTP {status} from {self.cfg.base_url}: {hint}. "
                                                  f"Server said: {detail}", status) from None
                    last = f"HTTP {status}: {detail}"
                    if status not in RETRY_STATUS:
                        raise BackendError(f"{self.cfg.base_url} answered {last}", status) from None
                    retry_after = resp_headers.get("Retry-After") if resp_headers else None
            if attempt < retries:
                self._wait(attempt, retry_after)
        raise BackendError(f"{self.cfg.base_url}: gave up after {retries + 1} tries; last: {last}")

    def _first_choice(self, reply: dict[str, Any]) -> dict[str, Any]:
        try:
            choice = reply["choices"][0]
        except (KeyError, IndexError, TypeError):
            choice = None
        if not isinstance(choice, dict):
            raise BackendError(f"unexpected response shape from {self.cfg.base_url}: {json.dumps(reply)[:200]}")
        return choice

    def chat_choice(self, messages: list[dict[str, str]], max_tokens: int | None = None,
                    max_retries: int | None = None, **params: Any) -> dict[str, Any]:
        """``choices[0]`` of a chat completion (``message``, and ``logprobs`` when asked for and given).

        ``params`` go into the request as they are, e.g. ``logprobs=True, top_logprobs=5``.
        """
        reply = self.request("chat/completions", {"messages": messages, "max_tokens": max_tokens or self.cfg.max_tokens,
                                                  "temperature": self.cfg.temperature, **params}, max_retries)
        choice = self._first_choice(reply)
        if not isinstance(choice.get("message"), dict) or "content" not in choice["message"]:
            raise BackendError(f"unexpected response shape from {self.cfg.base_url}: {json.dumps(reply)[:200]}")
        return choice

    def complete(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
        """The assistant's reply to ``messages`` (the key redacted from it, should a server echo it).

        Raises :class:`BackendError` / :class:`AuthenticationError`.
        """
        return str(self.chat_choice(messages, max_tokens)["message"]["content"] or "")

    def completion_choice(self, prompt: str | list[int], max_tokens: int, max_retries: int | None = None,
                          **params: Any) -> dict[str, Any]:
        """``choices[0]`` of a *completions* request (``POST {base_url}/completions``).

        ``prompt`` is text, or token ids (OpenAI and vLLM accept them; llama-cpp-python's server does
        not: HTTP 500 with a validation error). ``params`` go into the request as they are, e.g.
        ``echo=True, logprobs=15``.
        """
        return self._first_choice(self.request("completions", {"prompt": prompt, "max_tokens": max_tokens,
                                                               "temperature": self.cfg.temperature, **params},
                                               max_retries))

    def run_many(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BackendError]:
        """``fn(item)`` for each item, ``concurrency`` at a time, in order; a :class:`BackendError` (or any
        unforeseen error, wrapped in one) is returned for its item, not raised, except
        :class:`AuthenticationError`, which would fail every request alike."""

        def one(item: T) -> R | BackendError:
            try:
                return fn(item)
            except AuthenticationError:
                raise
            except BackendError as e:
                return e
            except Exception as e:  # anything unforeseen fails this request only, never the batch
                return BackendError(f"{self.cfg.base_url}: {type(e).__name__}: "
                                    f"{redact(str(e), [self._key()])[:300]}")

        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(one, items))

    def map(self, conversations: Sequence[list[dict[str, str]]]) -> list[str | BackendError]:
        """:meth:`complete` for each conversation, ``concurrency`` at a time; errors returned, not raised
        (except :class:`AuthenticationError`, which would fail every request alike)."""
        return self.run_many(self.complete, conversations)
