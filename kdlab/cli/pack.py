"""``kdlab pack`` and ``kdlab unpack``: an ablation's state as a few checked files, to continue it on another machine
(:mod:`kdlab.ablation.pack`; the slice loop: docs/scale.md, GPU time in slices).

Their own commands, not an ``ablate`` flag: packing needs only the table (its rows name the run directories), not the
dozen flags that define the plan, and it works the same after a finished study, a stopped slice or a Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly


@friendly
def pack(
    tables: list[Path] = typer.Argument(
        ..., help="The ablation's table(s), e.g. results/ablations/<name>-grid-<key>.csv (paths relative to this "
                  "folder, where the ablation runs)."),
    out: Path = typer.Option(Path("kdlab-state"), "--out", help="Folder for the parts and manifest.json (new, "
                                                                 "empty, or an earlier pack's, replaced)."),
    weights: bool = typer.Option(False, "--weights", help="Also carry each finished cell's best.pt (for kdlab "
                                                          "eval there); the teacher's is always carried."),
    part_mib: int = typer.Option(16, "--part-mib", min=1, help="Largest file written, in MiB (larger states are "
                                                                "split into numbered parts)."),
    max_files: int = typer.Option(8, "--max-files", min=2, help="Most files written, the manifest included."),
    max_mib: int = typer.Option(64, "--max-mib", min=1, help="Most MiB written in all."),
) -> None:
    """Pack what a later slice needs to continue an ablation: tables, finished runs (no last.pt), the teacher."""
    from kdlab.ablation.pack import MIB, Limits, pack_state
    from kdlab.runs.console import console

    manifest = pack_state(tables, out, weights=weights,
                          limits=Limits(part_mib * MIB, max_files, max_mib * MIB))
    size = sum(part["bytes"] for part in manifest["parts"])
    console.print(f"packed {len(manifest['files'])} files into {out}: {len(manifest['parts'])} part(s), "
                  f"{size / MIB:.2f} MiB, and manifest.json; there: kdlab unpack {out}, then the same kdlab ablate "
                  "command", highlight=False, soft_wrap=True)


@friendly
def unpack(
    source: Path = typer.Argument(..., help="The folder kdlab pack wrote (its parts and manifest.json)."),
    into: Path = typer.Option(Path("."), "--into", help="Folder to restore the state under: run the same kdlab "
                                                        "ablate command from it."),
) -> None:
    """Check a pack's SHA-256 digests and restore its state; the same kdlab ablate command then continues."""
    from kdlab.ablation.pack import unpack_state
    from kdlab.runs.console import console

    written = unpack_state(source, into)
    console.print(f"restored {len(written)} files under {into}; continue with the same kdlab ablate command there",
                  highlight=False, soft_wrap=True)
