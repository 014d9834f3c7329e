"""`fleet init DIR`: an editable copy of what fleet ships (the setup playbook, the training script
and its configs, example inventories) for a new lab. Nothing that exists is overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

from .model import FleetError
from .resources import SHIPPED, shipped_root


def shipped_files() -> dict[Path, Path]:
    """Relative path in the new folder -> the shipped file it copies."""
    root = shipped_root()
    files = {}
    for top in SHIPPED:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(root)] = path
    return files


def init_lab(target: Path) -> list[Path]:
    """Copy every shipped file into `target`; refuse (copying nothing) if any of them exists there."""
    files = shipped_files()
    clashes = sorted(str(rel) for rel in files if (target / rel).exists())
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise FleetError(
            f"{target}: {', '.join(clashes[:3])}{more} already exist; fleet init overwrites nothing "
            "(choose an empty folder, or move them away)"
        )
    for rel, source in files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / rel)
    return sorted(files)
