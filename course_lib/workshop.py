"""Workshop chores: generate the learner notebooks, reset one, share a warm cache.

Command line (the Makefile's ``exercises``, ``reset``, ``pack-cache`` and ``unpack-cache`` targets)::

    python -m course_lib.workshop exercises [--check]   # notebooks/ -> exercises/ (--check: fail on drift)
    python -m course_lib.workshop reset 01               # exercises/01_*.ipynb back to the generated version
    python -m course_lib.workshop pack-cache [ARCHIVE]   # the artifact + model cache -> a .tar.gz
    python -m course_lib.workshop unpack-cache ARCHIVE   # ... and back, on a learner's machine

The archive holds ``cache/`` (the artifact cache, :func:`course_lib.cache.cache_dir`) and
``models/`` (converted pretrained models, :func:`course_lib.cache.model_cache_dir`), without
hidden entries (unfinished builds, temporary files). Unpacking refuses links and paths that leave
the target folders; the cache verifies every artifact's manifest when it is read, so a damaged
archive costs a rebuild, never a wrong result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

from course_lib import cache, exercises

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXERCISES = ROOT / "exercises"
BACKUPS = ROOT / "outputs" / "reset-backups"
DEFAULT_ARCHIVE = "mechinterp-cache.tar.gz"


def generate_all(notebooks_dir: Path = NOTEBOOKS, exercises_dir: Path = EXERCISES) -> list[Path]:
    """Write the learner version of every source notebook that has exercises."""
    return [exercises.generate_file(p, exercises_dir) for p in exercises.sources_with_exercises(notebooks_dir)]


def drift(notebooks_dir: Path = NOTEBOOKS, exercises_dir: Path = EXERCISES) -> list[str]:
    """Learner notebooks that differ from what :func:`generate_all` would write (or are missing/extra)."""
    problems = []
    sources = exercises.sources_with_exercises(notebooks_dir)
    for src in sources:
        target = exercises.learner_path(src, exercises_dir)
        want = exercises.dumps(exercises.generate(_read_json(src)))
        if not target.exists():
            problems.append(f"{target.name} is missing")
        elif target.read_text(encoding="utf-8") != want:
            problems.append(f"{target.name} differs from the generated version")
    names = {s.name for s in sources}
    problems += [f"{p.name} has no source notebook with exercises" for p in sorted(exercises_dir.glob("*.ipynb"))
                 if p.name not in names]
    return problems


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def find_notebook(key: str, folder: Path) -> Path:
    """``"01"``, ``"01_superposition_toy_models"`` or a file name -> the one matching notebook in ``folder``."""
    stem = Path(key).stem
    matches = [p for p in sorted(folder.glob("*.ipynb")) if p.stem == stem or p.stem.split("_")[0] == stem]
    if len(matches) != 1:
        valid = ", ".join(p.stem.split("_")[0] for p in sorted(folder.glob("*.ipynb")))
        raise SystemExit(f"NB={key!r} matches {len(matches)} notebooks in {folder}; valid: {valid}")
    return matches[0]


def reset(key: str, notebooks_dir: Path = NOTEBOOKS, exercises_dir: Path = EXERCISES,
          backups: Path = BACKUPS) -> tuple[Path, Path | None]:
    """Regenerate one learner notebook; the learner's edited copy is kept in ``backups``. Returns (path, backup)."""
    source = find_notebook(key, notebooks_dir)
    target = exercises.learner_path(source, exercises_dir)
    backup = None
    if target.exists():
        backups.mkdir(parents=True, exist_ok=True)
        backup = backups / f"{target.stem}-{time.strftime('%Y%m%d-%H%M%S')}.ipynb"
        shutil.copy2(target, backup)
    exercises.generate_file(source, exercises_dir)
    return target, backup


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def pack_cache(archive: Path) -> list[str]:
    """Write the artifact and model caches to ``archive`` (gzip tar); return the archive's member names."""
    roots = {"cache": cache.cache_dir(), "models": cache.model_cache_dir()}
    names = []
    archive.parent.mkdir(parents=True, exist_ok=True)
    with cache.atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for label, root in roots.items():
            for path in sorted(root.rglob("*")):
                if not path.is_file() or path.is_symlink() or not _visible(path, root):
                    continue
                if label == "cache" and roots["models"] in path.parents:
                    continue  # the model cache inside the artifact cache goes under models/
                name = f"{label}/{path.relative_to(root).as_posix()}"
                tar.add(path, arcname=name, recursive=False)
                names.append(name)
    return names


def unpack_cache(archive: Path) -> int:
    """Extract an archive from :func:`pack_cache` into this machine's caches; return the number of files."""
    roots = {"cache": cache.cache_dir(), "models": cache.model_cache_dir()}
    n = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            label, _, rel = member.name.partition("/")
            root = roots.get(label)
            target = (root / rel).resolve() if root is not None and rel else None
            if target is None or not member.isfile() or root.resolve() not in target.parents:
                raise ValueError(f"{archive}: unexpected entry {member.name!r} (not a file under cache/ or models/)")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with cache.atomic_path(target) as tmp, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.workshop", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("exercises", help="generate exercises/ from notebooks/")
    ex.add_argument("--check", action="store_true", help="only report drift (exit 1 if any)")
    rs = sub.add_parser("reset", help="restore one learner notebook from the generated version")
    rs.add_argument("notebook", help="number or stem, e.g. 01")
    pk = sub.add_parser("pack-cache", help="archive the warm cache to share with learners")
    pk.add_argument("archive", nargs="?", default=DEFAULT_ARCHIVE)
    up = sub.add_parser("unpack-cache", help="install a cache archive made by pack-cache")
    up.add_argument("archive")
    args = parser.parse_args(argv)
    out = sys.stdout.write
    if args.cmd == "exercises":
        if args.check:
            problems = drift()
            out("".join(f"{p}\n" for p in problems) or "exercises/ is up to date\n")
            return 1 if problems else 0
        for path in generate_all():
            out(f"wrote {path.relative_to(ROOT)}\n")
    elif args.cmd == "reset":
        path, backup = reset(args.notebook)
        out(f"restored {path.relative_to(ROOT)}" + (f" (your copy: {backup.relative_to(ROOT)})" if backup else "") + "\n")
    elif args.cmd == "pack-cache":
        names = pack_cache(Path(args.archive).resolve())
        out(f"packed {len(names)} files into {args.archive}\n")
    else:
        n = unpack_cache(Path(args.archive).resolve())
        out(f"unpacked {n} files into {cache.cache_dir()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
