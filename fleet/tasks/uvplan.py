"""What `uv pip install` did or would do, read from its own report (` + name==1.0`, ` - name==0.9`).

uv prints one line per distribution it removes (-) or installs (+); a name on both sides is an
upgrade, a downgrade or a reinstall. Pure: text in, changes out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

_LINE = re.compile(r"^ ?([+-]) ([A-Za-z0-9][A-Za-z0-9._-]*)(?:==(\S+))?(?: @ (\S+)| \(from (\S+)\))?")
NO_CHANGES = "Would make no changes"


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None  # installed version before; None: new
    new: str | None  # version after; None: removed

    @property
    def kind(self) -> str:
        if self.old is None:
            return "install"
        if self.new is None:
            return "remove"
        try:
            old, new = Version(self.old), Version(self.new)
        except InvalidVersion:
            return "reinstall" if self.old == self.new else "replace"
        return "upgrade" if new > old else "downgrade" if new < old else "reinstall"

    def __str__(self) -> str:
        if self.old is None:
            return f"+ {self.name} {self.new}"
        if self.new is None:
            return f"- {self.name} {self.old}"
        return f"~ {self.name} {self.old} -> {self.new} ({self.kind})"


def parse_changes(text: str) -> list[Change]:
    removed: dict[str, str] = {}
    added: dict[str, str] = {}
    order: list[str] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        sign, raw, version, url, origin = m.groups()
        name = canonicalize_name(raw)
        label = version or url or origin or "?"
        (added if sign == "+" else removed)[name] = label
        if name not in order:
            order.append(name)
    return [Change(n, removed.get(n), added.get(n)) for n in order]


def summarize(changes: list[Change], limit: int = 12) -> str:
    """`uv: 90 new (aiohttp 3.14.5, ...), 1 downgrade (numpy 2.4.6 -> 2.2.6)`: every downgrade,
    upgrade and removal by name; new packages up to `limit` (the diff lists every one)."""
    if not changes:
        return "uv: no changes"
    groups: dict[str, list[Change]] = {}
    for change in changes:
        groups.setdefault(change.kind, []).append(change)
    parts = []
    for kind in ("downgrade", "remove", "upgrade", "replace", "reinstall"):
        items = groups.get(kind, [])
        if items:
            shown = ", ".join(f"{c.name} {c.old} -> {c.new}" if c.new else f"{c.name} {c.old}" for c in items)
            parts.append(f"{len(items)} {kind}{'s' if len(items) > 1 else ''} ({shown})")
    new = groups.get("install", [])
    if new:
        shown = ", ".join(f"{c.name} {c.new}" for c in new[:limit])
        more = f", … +{len(new) - limit} more" if len(new) > limit else ""
        parts.insert(0, f"{len(new)} new ({shown}{more})")
    return "uv: " + "; ".join(parts)


def uv_error(text: str) -> str:
    """The lines of uv's output that say why it failed, in one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith(("error:", "\u00d7"))), None)
    picked = lines[start:] if start is not None else lines[-3:]
    return " ".join(picked)[:600] or "no output"
