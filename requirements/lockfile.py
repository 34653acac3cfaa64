"""The lock files of the course's three virtual environments: make them, check them.

    python3 requirements/lockfile.py make [NAME ...]    regenerate with pip-compile (what `make lock` runs)
    python3 requirements/lockfile.py check [NAME ...]   fail when a lock no longer matches its inputs

Each environment has its loose specs (the inputs) and a lock of exact versions of every package,
transitive ones included (the output of pip-compile from pip-tools):

    course    pyproject.toml [project] dependencies + the dev extra  ->  requirements/course.txt   (.venv)
    saelens   requirements/saelens.in                                ->  requirements/saelens.txt  (.saelens-venv)
    llamacpp  requirements/llamacpp.in                               ->  requirements/llamacpp.txt (.llamacpp-venv)

torch (and llama-cpp-python, compiled here) is installed on its own first and is left out of the locks,
so that a CPU or CUDA build chosen with TORCH_PIP_ARGS is never replaced. The venvs install a lock with
``pip install --no-deps -r``: exactly what it lists, nothing resolved anew.

A lock's first lines record the SHA-256 of its inputs and of its own body. ``check`` recomputes both: a
change to the inputs without a new lock, or a hand edit of the lock, fails with the command that
regenerates it. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "requirements"
PIP_TOOLS = "pip-tools==7.7.0"  # the locker, installed into a throwaway venv by `make lock`
REGENERATE = "make lock"

# name -> (input file, the packages installed outside the lock)
LOCKS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "course": (ROOT / "pyproject.toml", ("torch",)),
    "saelens": (HERE / "saelens.in", ("torch",)),
    "llamacpp": (HERE / "llamacpp.in", ("llama-cpp-python",)),
}


def lock_path(name: str) -> Path:
    return HERE / f"{name}.txt"


def inputs_digest(name: str) -> str:
    """SHA-256 of what decides the lock: pyproject's dependency lists, or the whole ``.in`` file."""
    src, _ = LOCKS[name]
    if src.suffix == ".toml":
        project = tomllib.loads(src.read_text(encoding="utf-8"))["project"]
        text = json.dumps([project["dependencies"], project["optional-dependencies"].get("dev", [])])
    else:
        text = src.read_text(encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def _body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _split(text: str) -> tuple[dict[str, str], str]:
    """A lock's ``# key: value`` header lines (up to the first blank line) and its body."""
    head, _, body = text.partition("\n\n")
    fields = {}
    for line in head.splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            fields[key] = value
    return fields, body


def check(name: str) -> str | None:
    """``None`` when ``requirements/<name>.txt`` matches its inputs and is unedited, else the reason."""
    path = lock_path(name)
    src, _ = LOCKS[name]
    rel = path.relative_to(ROOT)
    if not path.exists():
        return f"{rel} is missing: run `{REGENERATE}`"
    fields, body = _split(path.read_text(encoding="utf-8"))
    if fields.get("inputs-sha256") != inputs_digest(name):
        return (f"{rel} does not match {src.relative_to(ROOT)} (its dependencies changed since the lock was made): "
                f"run `{REGENERATE}` and commit both")
    if fields.get("body-sha256") != _body_digest(body):
        return f"{rel} was edited by hand: run `{REGENERATE}` to regenerate it from {src.relative_to(ROOT)}"
    return None


def pins(name: str) -> dict[str, str]:
    """``{package: version}`` of a lock (names lower case, ``_`` as ``-``)."""
    _, body = _split(lock_path(name).read_text(encoding="utf-8"))
    out = {}
    for line in body.splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            pkg, _, ver = line.partition("==")
            out[pkg.strip().lower().replace("_", "-")] = ver.split()[0]
    return out


def make(name: str, python: str) -> None:
    """Run pip-compile (from the venv of ``python``) for one lock and write it with its header."""
    src, outside = LOCKS[name]
    path = lock_path(name)
    tmp = path.with_suffix(".tmp")
    cmd = [python, "-m", "piptools", "compile", "--quiet", "--no-header", "--strip-extras", "--rebuild",
           "--no-emit-index-url", "--no-emit-find-links", "--no-emit-trusted-host",
           "--output-file", str(tmp)]
    for pkg in outside:
        cmd += ["--unsafe-package", pkg]
    if name == "course":
        cmd += ["--extra", "dev"]
    cmd.append(str(src))
    subprocess.run(cmd, check=True, cwd=ROOT)
    body = tmp.read_text(encoding="utf-8")
    tmp.unlink()
    head = (f"# {path.relative_to(ROOT)}: exact versions for the {name} venv. Generated, do not edit: "
            f"`{REGENERATE}` ({PIP_TOOLS}) from {src.relative_to(ROOT)}.\n"
            f"# installed outside this lock: {', '.join(outside)}\n"
            f"# inputs-sha256: {inputs_digest(name)}\n"
            f"# body-sha256: {_body_digest(body)}\n\n")
    path.write_text(head + body, encoding="utf-8")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("make", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    names = argv[1:] or list(LOCKS)
    unknown = [n for n in names if n not in LOCKS]
    if unknown:
        print(f"unknown lock {unknown}; the locks are {list(LOCKS)}", file=sys.stderr)
        return 2
    if argv[0] == "make":
        for n in names:
            make(n, sys.executable)
            print(f"wrote {lock_path(n).relative_to(ROOT)}")
        return 0
    bad = [msg for n in names if (msg := check(n))]
    for msg in bad:
        print(f"error: {msg}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
