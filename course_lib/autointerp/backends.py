"""An OpenAI-compatible chat-completions client (stdlib only) for hosted or self-served LLMs.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "max_tokens", "temperature"}``
and ``Authorization: Bearer <key>``; the answer is ``choices[0].message.content``. This is the API
of OpenAI and of self-served engines (vLLM ``--api-key``, llama.cpp ``llama-server``, Ollama's
``/v1``), so one client covers them all.

* The key is read from the environment variable *named* by ``api_key_env`` at request time; it is
  never stored on the object, never put in a message, exception, log or result, and
  :func:`redact` scrubs it from any text that passes through (server error bodies included).
* Timeouts per request; retries with exponential backoff (``backoff * 2**attempt``, honouring
  ``Retry-After``) on 429, 5xx and network errors, at most ``max_retries`` times; a 401/403 is not
  retried and raises :class:`AuthenticationError` saying which variable to set.
* :meth:`ChatClient.map` runs many requests with at most ``concurrency`` in flight and returns
  one result or :class:`BackendError` per request (a failed unit never loses the finished ones).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class BackendError(RuntimeError):
    """A request failed (after retries, if retryable). The message never contains the API key."""


class AuthenticationError(BackendError):
    """401/403: the key is missing or wrong."""


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


@dataclasses.dataclass(frozen=True)
class ChatConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # ends before /chat/completions (OpenAI: https://api.openai.com/v1)
    model: str = "gpt-4o-mini"  # model name as the server knows it
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env var holding the key (None: no auth)
    timeout_s: float = 60.0  # per request
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

    def complete(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
        """The assistant's reply to ``messages``; raises :class:`BackendError` / :class:`AuthenticationError`."""
        key = self._key()
        body = json.dumps({"model": self.cfg.model, "messages": messages,
                           "max_tokens": max_tokens or self.cfg.max_tokens,
                           "temperature": self.cfg.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            self.n_requests += 1
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                try:
                    return str(payload["choices"][0]["message"]["content"] or "")
                except (KeyError, IndexError, TypeError) as e:
                    raise BackendError(f"unexpected response shape from {self.cfg.base_url}: "
                                       f"{redact(json.dumps(payload)[:200], [key])}") from e
            except urllib.error.HTTPError as e:
                detail = redact(e.read().decode("utf-8", "replace")[:300], [key])
                if e.code in (401, 403):
                    hint = (f"set the environment variable {self.cfg.api_key_env} to a valid key"
                            if self.cfg.api_key_env else "this server needs a key: set API_KEY_ENV")
                    if self.cfg.api_key_env and not key:
                        hint = f"environment variable {self.cfg.api_key_env} is not set"
                    raise AuthenticationError(f"HTTP {e.code} from {self.cfg.base_url}: {hint}. "
                                              f"Server said: {detail}") from None
                last = f"HTTP {e.code}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise BackendError(f"{self.cfg.base_url} answered {last}") from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {redact(str(getattr(e, 'reason', e)), [key])}"
                retry_after = None
            except json.JSONDecodeError:
                last = "response is not JSON"
                retry_after = None
            if attempt < self.cfg.max_retries:
                self._wait(attempt, retry_after)
        raise BackendError(f"{self.cfg.base_url}: gave up after {self.cfg.max_retries + 1} tries; last: {last}")

    def map(self, conversations: Sequence[list[dict[str, str]]]) -> list[str | BackendError]:
        """:meth:`complete` for each conversation, ``concurrency`` at a time; errors returned, not raised
        (except :class:`AuthenticationError`, which would fail every request alike)."""

        def one(msgs: list[dict[str, str]]) -> str | BackendError:
            try:
                return self.complete(msgs)
            except AuthenticationError:
                raise
            except BackendError as e:
                return e

        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(one, conversations))
