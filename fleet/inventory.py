"""Inventories: hosts, groups and their variables, and host patterns.

A fleet inventory is a folder (or a single file) holding `hosts.yaml`, with optional `group_vars/`
and `host_vars/` folders beside it. An Ansible inventory (YAML or INI) is read too, its
`ansible_*` connection variables mapped to fleet's names.

Variable precedence, lowest first:
  0. a play's `defaults:` (see fleet/playbook.py)
  1. group `all` (inventory file, then group_vars/all.yaml)
  2. other groups, parents before children, alphabetically among equals
     (each: inventory file, then group_vars/<group>.yaml)
  3. the host's own vars in the inventory file, then host_vars/<host>.yaml
  4. play vars, registered results (set by the playbook)
  5. extra vars from the command line (-e), which always win
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import FleetError
from .yamlfile import load_yaml

ANSIBLE_NAMES = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_ssh_private_key_file": "key",
    "ansible_private_key_file": "key",
    "ansible_connection": "connection",
    "ansible_password": "password",
    "ansible_ssh_pass": "password",
    "ansible_become": "become",
    "ansible_become_user": "become_user",
}

_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")


def expand_range(pattern: str) -> list[str]:
    """`gh200-[01:16]` -> gh200-01 … gh200-16 (zero padding kept); `n[a:c]` -> na, nb, nc."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    start, end, step = match.group(1), match.group(2), int(match.group(3) or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise FleetError(f"bad host range {match.group(0)!r} in {pattern!r}: use [01:16] or [a:f]")
    if not values:
        raise FleetError(f"host range {match.group(0)!r} in {pattern!r} is empty")
    return [name for v in values for name in expand_range(head + v + tail)]


def fleet_vars(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Vars as fleet names them (Ansible's connection names translated, others kept)."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        out[ANSIBLE_NAMES.get(str(key), str(key))] = value
    return out


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@dataclass
class Host:
    name: str
    vars: dict[str, Any]
    groups: list[str]


@dataclass
class Inventory:
    source: str
    groups: dict[str, Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # inventory + host_vars/
    order: list[str] = field(default_factory=list)  # hosts in the order they were written

    # ---- building -------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        return self.groups.setdefault(name, Group(name))

    def add_host(self, name: str, group: str, hostvars: Mapping[str, Any] | None = None) -> None:
        if name not in self.host_vars:
            self.host_vars[name] = {}
            self.order.append(name)
        self.host_vars[name].update(fleet_vars(hostvars))
        if name not in self.group(group).hosts:
            self.group(group).hosts.append(name)

    # ---- reading --------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return list(self.order)

    def parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for group in self.groups.values():
            for child in group.children:
                parents.setdefault(child, set()).add(group.name)
        return parents

    def _depth(self, name: str, parents: Mapping[str, set[str]], seen: frozenset[str] = frozenset()) -> int:
        if name == "all":
            return 0
        ups = [p for p in parents.get(name, ()) if p not in seen]
        return 1 + max((self._depth(p, parents, seen | {name}) for p in ups), default=0)

    def groups_of(self, host: str) -> list[str]:
        """Every group the host is in, directly or through children, shallow groups first."""
        parents = self.parents()
        found: set[str] = set()
        todo = [g.name for g in self.groups.values() if host in g.hosts]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(parents.get(name, ()))
        found.add("all")
        return sorted(found, key=lambda g: (self._depth(g, parents), g))

    def members(self, group: str) -> list[str]:
        names: set[str] = set()
        todo, seen = [group], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in self.groups:
                continue
            seen.add(name)
            names.update(self.groups[name].hosts)
            todo.extend(self.groups[name].children)
        if group == "all":
            return self.hosts
        return [h for h in self.order if h in names]

    def host(self, name: str) -> Host:
        groups = self.groups_of(name)
        merged: dict[str, Any] = {}
        for group in groups:
            if group in self.groups:
                merged.update(self.groups[group].vars)
        merged.update(self.host_vars.get(name, {}))
        return Host(name, merged, [g for g in groups if g != "all"])

    # ---- patterns ------------------------------------------------------------------------
    def select(self, pattern: str | None) -> list[str]:
        """Hosts a pattern selects, in inventory order.

        `a,b` (or `a:b`) union; `!x` removes; `&g` keeps only hosts also in g; each term is a
        host name, a group name, a glob over either (`gh200-*`), or `all`/`*`.
        """
        pattern = (pattern or "all").strip()
        terms = [t.strip() for t in re.split(r",|:(?![^\[]*\])", pattern) if t.strip()]  # not a [01:16] colon
        if not terms:
            raise FleetError("empty host pattern")
        chosen: set[str] = set()
        adds = [t for t in terms if t[0] not in "!&"]
        for term in adds or ["all"]:
            chosen |= self._term(term)
        for term in terms:
            if term.startswith("&"):
                chosen &= self._term(term[1:])
            elif term.startswith("!"):
                chosen -= self._term(term[1:])
        return [h for h in self.order if h in chosen]

    def _term(self, term: str) -> set[str]:
        if term in ("all", "*"):
            return set(self.order)
        if term in self.groups:
            return set(self.members(term))
        if term in self.host_vars:
            return {term}
        if _RANGE.search(term):  # gh200-[01:04] is a range, not a glob's character class
            return {h for h in expand_range(term) if h in self.host_vars}
        names = set(fnmatch.filter(self.order, term))
        for group in fnmatch.filter(self.groups, term):
            names |= set(self.members(group))
        return names

    def require(self, pattern: str | None) -> list[str]:
        hosts = self.select(pattern)
        if not hosts:
            known = ", ".join(sorted(set(self.groups) - {"all", "ungrouped"})[:8]) or "none"
            raise FleetError(
                f"host pattern {pattern!r} matches no host in {self.source} "
                f"(groups: {known}; try `fleet inventory -i {self.source}`)"
            )
        return hosts


# ---- loading -------------------------------------------------------------------------------
def load_inventory(path: str | Path) -> Inventory:
    """Read a fleet/Ansible inventory from a folder or a file."""
    root = Path(path)
    if not root.exists():
        raise FleetError(f"inventory {root} does not exist (pass -i PATH to a folder or hosts file)")
    if root.is_dir():
        candidates = [root / n for n in ("hosts.yaml", "hosts.yml", "hosts", "inventory.yaml", "hosts.ini")]
        files = [c for c in candidates if c.is_file()]
        if not files:
            raise FleetError(f"inventory folder {root} has no hosts.yaml (or Ansible hosts/hosts.ini)")
        file, base = files[0], root
    else:
        file, base = root, root.parent
    inv = Inventory(source=str(root))
    inv.group("all")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml") or _looks_yaml(text):
        _read_yaml(inv, file)
    else:
        _read_ini(inv, file, text)
    _read_vars_dirs(inv, base)
    ungrouped = [h for h in inv.order if not any(h in g.hosts for g in inv.groups.values() if g.name != "all")]
    for name in ungrouped:
        if name not in inv.group("ungrouped").hosts:
            inv.group("ungrouped").hosts.append(name)
    return inv


def _looks_yaml(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped == "---" or (not stripped.startswith("[") and stripped.endswith(":"))
    return False


def _read_yaml(inv: Inventory, file: Path) -> None:
    data = load_yaml(file)
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise FleetError(f"{file}: an inventory is a mapping of groups (e.g. `all:` with `hosts:`)")
    for name, body in data.items():
        _read_group(inv, file, str(name), body, parent=None)


def _read_group(inv: Inventory, file: Path, name: str, body: Any, parent: str | None) -> None:
    group = inv.group(name)
    if parent and parent != name and name not in inv.group(parent).children:
        inv.group(parent).children.append(name)
    if body is None:
        return
    if not isinstance(body, Mapping):
        line = getattr(body, "line", None)
        where = f"{file}:{line}" if line else str(file)
        raise FleetError(f"{where}: group {name!r} must be a mapping with hosts/vars/children")
    unknown = set(body) - {"hosts", "vars", "children"}
    if unknown:
        raise FleetError(
            f"{_where(file, body)}: group {name!r} has unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            "(allowed: hosts, vars, children)"
        )
    group.vars.update(fleet_vars(body.get("vars")))
    hosts = body.get("hosts") or {}
    if isinstance(hosts, list):
        hosts = {h: None for h in hosts}
    if not isinstance(hosts, Mapping):
        raise FleetError(f"{_where(file, body)}: hosts of group {name!r} must be a mapping or list")
    for pattern, hostvars in hosts.items():
        if hostvars is not None and not isinstance(hostvars, Mapping):
            raise FleetError(f"{_where(file, hosts)}: vars of host {pattern!r} must be a mapping")
        for host in expand_range(str(pattern)):
            inv.add_host(host, name, hostvars)
    for child, child_body in (body.get("children") or {}).items():
        _read_group(inv, file, str(child), child_body, parent=name)


def _where(file: Path, node: Any) -> str:
    line = getattr(node, "line", None)
    return f"{file}:{line}" if line else str(file)


def _read_ini(inv: Inventory, file: Path, text: str) -> None:
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise FleetError(f"{file}:{number}: unclosed section header {line!r}")
            name = line[1:-1]
            section, _, kind = name.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise FleetError(f"{file}:{number}: unknown section kind {kind!r} (use :vars or :children)")
            inv.group(section)
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise FleetError(f"{file}:{number}: {exc}") from None
        if kind == "children":
            if words[0] not in inv.group(section).children:
                inv.group(section).children.append(words[0])
            inv.group(words[0])
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise FleetError(f"{file}:{number}: expected key=value in [{section}:vars]")
            inv.group(section).vars.update(fleet_vars({key.strip(): _ini_value(value.strip())}))
        else:
            hostvars = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise FleetError(f"{file}:{number}: expected key=value after host name, got {word!r}")
                hostvars[key] = _ini_value(value)
            for host in expand_range(words[0]):
                inv.add_host(host, section, hostvars)


def _ini_value(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        return value


def _read_vars_dirs(inv: Inventory, base: Path) -> None:
    for kind in ("group_vars", "host_vars"):
        folder = base / kind
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            name = entry.stem if entry.is_file() else entry.name
            files = sorted(entry.glob("*.y*ml")) if entry.is_dir() else [entry]
            for file in files:
                if file.suffix not in (".yaml", ".yml", "") or file.name.startswith("."):
                    continue
                data = load_yaml(file) or {}
                if not isinstance(data, Mapping):
                    raise FleetError(f"{file}: variables must be a mapping of name: value")
                if kind == "group_vars":
                    inv.group(name).vars.update(fleet_vars(data))
                elif name in inv.host_vars:
                    inv.host_vars[name].update(fleet_vars(data))

