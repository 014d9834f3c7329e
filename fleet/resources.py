"""The files fleet ships beside its code: the setup playbook, the training script and its configs,
the example inventories. A wheel carries them as package data (`fleet/shipped/`, see
pyproject.toml); a source checkout has them at its root. A copy in the current folder
(`./playbooks/...`, as `fleet init` writes it) overrides both, so a lab edits its own."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .model import FleetError

PACKAGE_DATA = "shipped"  # fleet/shipped/ inside an installed wheel
SHIPPED = ("playbooks", "inventories")  # the top-level folders that travel


def _package_root() -> Path | None:
    root = resources.files("fleet") / PACKAGE_DATA
    # A wheel installs as plain files; a zipped install would have no paths to hand to ssh or sh.
    return Path(str(root)) if isinstance(root, Path) and root.is_dir() else None


def _checkout_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "playbooks").is_dir() and (root / "pyproject.toml").is_file() else None


def shipped_root() -> Path:
    """The folder holding the shipped `playbooks/` and `inventories/` (package data, or the checkout)."""
    for root in (_package_root(), _checkout_root()):
        if root is not None:
            return root
    raise FleetError("this fleet install carries no playbooks (a broken install?): reinstall it with pip")


def find(relative: str | Path) -> Path:
    """`relative` in the current folder when it is there (a lab's edited copy), else the shipped one."""
    path = Path(relative)
    if path.is_absolute() or path.exists():
        return path
    shipped = shipped_root() / path
    return shipped if shipped.exists() else path
