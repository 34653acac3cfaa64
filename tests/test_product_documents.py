"""Tracked files speak of the product, not of how it was developed: no development sessions, issue numbers,
machines lent, helpers or scratch scripts. History lives in git."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".md", ".py", ".ipynb", ".sh", ".toml", ".yml", ".yaml", ".txt", ".in", ".cfg", ""}
PATTERNS = {
    "a development session": re.compile(
        r"\bsessions? \d+\b|\b(?:this|that|an? earlier|previous|later|next|development|one|three|two) sessions?\b"
        r"(?! ?(?:scope|fixture|cache|-scoped))|\bover \w+ sessions\b", re.I),
    "an issue number": re.compile(r"\bissues? #?\d+\b|(?<![\w&/:;'\"])#\d{1,3}\b(?![\w;-])", re.I),
    "a machine lent": re.compile(r"\b(?:was|were|is|are|not|no GPU was) lent\b|\blending\b|\bdevice budget\b", re.I),
    "a helper agent": re.compile(r"\bhelper (?:agent|subagent)s?\b|\bsubagents?\b", re.I),
    "a scratch script": re.compile(r"/tmp/[\w.-]+\.(?:py|sh)\b|\bscratch script", re.I),
}


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in out.splitlines():
        p = ROOT / name
        if p.suffix in TEXT_SUFFIXES and p.is_file() and p.stat().st_size < 2_000_000 and "/reference/" not in name:
            files.append(p)
    return files


def test_the_scanner_finds_what_it_looks_for():
    hits = {k for k, pat in PATTERNS.items() for text in [
        # written in pieces, so that this file does not itself read as a diary
        "trained over three sess" + "ions", "measured in sess" + "ion 12", "see iss" + "ue #24",
        "no GPU was l" + "ent", "a helper ag" + "ent read it", "python /t" + "mp/probe.py"] if pat.search(text)}
    assert hits == set(PATTERNS)
    clean = ["a session-scoped fixture", "the pytest session cache", "color #fff", "the C++ compiler", "helpers.py"]
    assert not [t for t in clean for pat in PATTERNS.values() if pat.search(t)]


def test_no_tracked_file_tells_how_the_project_was_developed():
    found = []
    for path in _tracked():
        if path.name == "test_product_documents.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for what, pat in PATTERNS.items():
                m = pat.search(line)
                if m:
                    found.append(f"{path.relative_to(ROOT)}:{i}: {what}: {m.group(0)!r}")
    assert not found, "\n".join(found[:40]) + f"\n({len(found)} in all)"
