"""An ablation's state as a few checked files, to continue it on another machine (``kdlab pack`` / ``kdlab unpack``).

A slice of GPU time often starts on a bare machine and can send and bring back only a few files (e.g. at most
8 files of 16 MiB, 64 MiB in all). :func:`pack_state` gathers what a later slice needs to continue an ablation
with the same ``kdlab ablate`` command:

* each table (its CSV, Markdown and PNG) and the ``output.table`` (``runs.csv``) its runs appended to;
* each finished cell's run directory without its weights: ``summary.json`` (reuse reads only it: a run directory
  with a summary is reused, :func:`kdlab.runs.run.run_recipe`), ``run.json``, ``recipe.yaml``, ``metrics.csv``,
  ``code.diff``; ``best.pt`` too with ``weights`` (for ``kdlab eval`` there);
* the shared teacher's finished run directory with its ``best.pt`` (the cells load it) and its cached evaluation.

Unfinished runs (``last.pt`` only) are not carried: they restart there. Every path is stored relative to the
current folder, which must hold them all (``output.dir`` relative, as by default ``results/runs``): a run is found
again by its key under ``output.dir``, so the unpacked layout must be the same relative to where the command runs.

The files are one ``tar.gz`` split into numbered parts of at most ``part_bytes`` plus ``manifest.json``, which lists
every part's and every packed file's size and SHA-256; a state over the limits is refused before anything is
written. :func:`unpack_state` checks every part's digest before extracting (a damaged part is refused, nothing
written), then every file's, and never overwrites a file with other content.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from kdlab.errors import KdlabError
from kdlab.results import atomic_write_text, now, read_rows

MIB = 1024 * 1024
MANIFEST = "manifest.json"
PART_PREFIX = "state.tar.gz."
FORMAT = "kdlab-state 1"
RUN_FILES = ("summary.json", "run.json", "recipe.yaml", "metrics.csv", "code.diff")


@dataclass(frozen=True)
class Limits:
    """What one transfer may carry: each file at most ``part_bytes``, at most ``max_files`` files (the manifest
    counts) and ``total_bytes`` in all."""

    part_bytes: int = 16 * MIB
    max_files: int = 8
    total_bytes: int = 64 * MIB


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relative(path: Path, root: Path, what: str) -> Path:
    """``path`` relative to ``root``, refusing one outside it (it would not be found there after unpacking)."""
    if path.is_absolute():
        raise KdlabError(f"{what} '{path}' is an absolute path, which would not exist on another machine: run the "
                         "study with a relative output.dir and output.table (the defaults, results/...) and pack "
                         "from the folder the command runs in")
    resolved = (root / path).resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        raise KdlabError(f"{what} '{path}' lies outside {root}: pack from the folder the ablation runs in") from None
    return Path(os.path.normpath(path))


def _run_files(run_dir: Path, root: Path, weights: bool, teacher: bool) -> list[Path]:
    """The files of a finished run directory to carry; none for an unfinished one."""
    if not (root / run_dir / "summary.json").is_file():
        return []
    names = [name for name in RUN_FILES if (root / run_dir / name).is_file()]
    if teacher or weights:
        names.append("best.pt")
    if teacher:  # the teacher's cached evaluation under the ablation's settings
        names += sorted(path.name for path in (root / run_dir).glob("eval-*.json"))
    return [run_dir / name for name in names]


def state_files(tables: list[Path], root: Path, weights: bool = False) -> list[Path]:
    """Every file (relative to ``root``) the ablation tables' continuation needs; see the module docstring."""
    files: list[Path] = []
    run_dirs: dict[Path, bool] = {}  # run directory -> is a teacher
    runs_tables: set[Path] = set()
    for table in tables:
        table = _relative(Path(table), root, "table")
        if not (root / table).is_file():
            raise KdlabError(f"table '{table}' not found in {root}: pass the ablation's CSV, e.g. "
                             "results/ablations/<name>-grid-<key>.csv")
        files += [table.with_suffix(suffix) for suffix in (".csv", ".md", ".png")
                  if (root / table.with_suffix(suffix)).is_file()]
        for row in read_rows(root / table):
            if not row.get("run_dir"):
                continue
            run_dir = _relative(Path(row["run_dir"]), root, f"{table}: run_dir")
            run_dirs[run_dir] = run_dirs.get(run_dir, False) or row.get("cell") == "teacher"
    for run_dir in list(run_dirs):
        record = root / run_dir / "run.json"
        teacher = json.loads(record.read_text()).get("teacher", "") if record.is_file() else ""
        if teacher and not Path(teacher).is_absolute() and (root / teacher / "summary.json").is_file():
            run_dirs[_relative(Path(teacher), root, f"{record}: teacher")] = True
        elif teacher and Path(teacher).is_dir():
            raise KdlabError(f"{record}: teacher '{teacher}' is an absolute path: train the teacher with a relative "
                             "output.dir (the default, results/runs) so it can move")
    for run_dir, teacher in sorted(run_dirs.items()):
        found = _run_files(run_dir, root, weights, teacher)
        files += found
        if found and (root / run_dir / "recipe.yaml").is_file():
            output = (yaml.safe_load((root / run_dir / "recipe.yaml").read_text()) or {}).get("output") or {}
            runs_tables.add(_relative(Path(output.get("table", "results/runs.csv")), root, f"{run_dir}: output.table"))
    files += sorted(table for table in runs_tables if (root / table).is_file())
    return list(dict.fromkeys(files))


def pack_state(tables: list[Path], out: Path, *, root: Path | None = None, weights: bool = False,
               limits: Limits = Limits()) -> dict:
    """Write the state of ``tables``' ablation into the folder ``out`` (parts + manifest); return the manifest."""
    root = Path(root or Path.cwd())
    files = state_files(tables, root, weights)
    buffer = io.BytesIO()
    entries = []
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in files:
            data = (root / path).read_bytes()
            entries.append({"path": path.as_posix(), "bytes": len(data), "sha256": _digest(data)})
            info = tarfile.TarInfo(path.as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, int((root / path).stat().st_mtime)
            archive.addfile(info, io.BytesIO(data))
    packed = buffer.getvalue()
    chunks = [packed[start:start + limits.part_bytes] for start in range(0, len(packed), limits.part_bytes)] or [b""]
    largest = max(entries, key=lambda entry: entry["bytes"]) if entries else {"path": "-", "bytes": 0}
    advice = (f"the largest file is {largest['path']} ({largest['bytes'] / MIB:.1f} MiB); pack without --weights, "
              "or carry fewer tables")
    if len(chunks) + 1 > limits.max_files:
        raise KdlabError(f"the state is {len(packed) / MIB:.1f} MiB packed: {len(chunks)} parts of "
                         f"{limits.part_bytes / MIB:g} MiB + the manifest is over {limits.max_files} files; {advice}")
    manifest = {"format": FORMAT, "created": now(), "tables": [Path(t).as_posix() for t in tables],
                "parts": [{"name": f"{PART_PREFIX}{index:03d}", "bytes": len(chunk), "sha256": _digest(chunk)}
                          for index, chunk in enumerate(chunks)],
                "files": entries}
    text = json.dumps(manifest, indent=2) + "\n"
    if len(packed) + len(text.encode()) > limits.total_bytes:
        raise KdlabError(f"the state is {len(packed) / MIB:.1f} MiB packed, over the {limits.total_bytes / MIB:g} "
                         f"MiB limit; {advice}")
    _write_pack(Path(out), chunks, manifest, text)
    return manifest


def _write_pack(out: Path, chunks: list[bytes], manifest: dict, text: str) -> None:
    """Fill ``out`` (absent, empty, or an earlier pack, whose files are replaced) with the parts and manifest."""
    if out.exists() and (not out.is_dir() or any(path.name != MANIFEST and not path.name.startswith(PART_PREFIX)
                                                 for path in out.iterdir())):
        raise KdlabError(f"--out {out} holds other files: pack into a new or empty folder (or an earlier pack's)")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".packing-"))
    try:
        for part, chunk in zip(manifest["parts"], chunks):
            (staging / part["name"]).write_bytes(chunk)
        for old in out.glob(f"{PART_PREFIX}*"):
            old.unlink()
        for part in manifest["parts"]:
            os.replace(staging / part["name"], out / part["name"])
        atomic_write_text(out / MANIFEST, text)  # last: a pack with a manifest is whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unpack_state(source: Path, into: Path | None = None) -> list[str]:
    """Check ``source``'s parts and files against its manifest and restore them under ``into`` (default: the
    current folder); return the paths written. Refuses, before writing anything, a missing or damaged part, a
    path that would leave ``into``, and a file that exists there with other content."""
    source, into = Path(source), Path(into or Path.cwd())
    if not (source / MANIFEST).is_file():
        raise KdlabError(f"{source / MANIFEST} not found: pass the folder kdlab pack wrote")
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except json.JSONDecodeError as error:
        raise KdlabError(f"{source / MANIFEST} is not valid JSON ({error}): copy the pack again") from None
    if manifest.get("format") != FORMAT:
        raise KdlabError(f"{source / MANIFEST}: not a {FORMAT} manifest: pass the folder kdlab pack wrote")
    packed = b""
    for part in manifest["parts"]:
        path = source / part["name"]
        if not path.is_file():
            raise KdlabError(f"{path} is missing (the manifest lists it): copy every file of the pack")
        data = path.read_bytes()
        if _digest(data) != part["sha256"]:
            raise KdlabError(f"{path}: SHA-256 {_digest(data)[:12]}... does not match the manifest's "
                             f"{part['sha256'][:12]}...: the file was damaged or changed in transfer; copy it again")
        packed += data
    expected = {entry["path"]: entry for entry in manifest["files"]}
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.name not in expected or not member.isfile():
                raise KdlabError(f"{source}: the archive holds '{member.name}', which the manifest does not list")
            contents[member.name] = archive.extractfile(member).read()
    for name, entry in expected.items():
        data = contents.get(name)
        if data is None or _digest(data) != entry["sha256"]:
            raise KdlabError(f"{source}: {name} does not match its SHA-256 in the manifest: copy the pack again")
        target = (into / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or into.resolve() not in target.parents:
            raise KdlabError(f"{source}: '{name}' would be written outside {into}; refusing the pack")
        if target.is_file() and _digest(target.read_bytes()) != entry["sha256"]:
            raise KdlabError(f"{into / name} exists with other content: unpack into a new folder, or move it away")
    written = []
    for name, data in contents.items():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, target)
        written.append(name)
    return written
