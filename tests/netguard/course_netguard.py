"""Make every network connection fail, and log each attempt to a file (test-only).

Loaded into notebook kernels through ``sitecustomize.py`` in this folder (PYTHONPATH), and
installed in-process by tests. Unix-domain sockets stay allowed (they never leave the machine).
"""

from __future__ import annotations

import socket
from collections.abc import Callable


def install(log_path: str) -> Callable[[], None]:
    """Install the guard; return a function that removes it again."""
    orig_connect = socket.socket.connect
    orig_connect_ex = socket.socket.connect_ex
    orig_getaddrinfo = socket.getaddrinfo

    def _log(what: str) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(what + "\n")

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return orig_connect(self, address)
        _log(f"connect {address!r}")
        raise OSError(f"network disabled by the test guard: connect to {address!r}")

    def connect_ex(self, address):
        if self.family == socket.AF_UNIX:
            return orig_connect_ex(self, address)
        _log(f"connect_ex {address!r}")
        raise OSError(f"network disabled by the test guard: connect to {address!r}")

    def getaddrinfo(host, *args, **kwargs):
        _log(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"network disabled by the test guard: resolve {host!r}")

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo

    def uninstall() -> None:
        socket.socket.connect = orig_connect
        socket.socket.connect_ex = orig_connect_ex
        socket.getaddrinfo = orig_getaddrinfo

    return uninstall
