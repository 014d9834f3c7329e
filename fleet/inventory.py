"""Inventories: hosts, groups and their variables, read as Ansible reads them.

A source is a fleet/Ansible YAML file (`.yaml`, `.yml`, `.json`), an Ansible INI file (any other
name), a folder of such sources (read in name order, as Ansible does), or `slurm` (the hosts of
`$SLURM_JOB_NODELIST`, in group `slurm`). `group_vars/` and `host_vars/` beside a file source (or
inside a folder source) hold `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` or a folder `NAME/` of
such files (merged in name order). Ansible's `ansible_*` connection names are mapped to fleet's.

Variable precedence, lowest first (Ansible's documented order, fleet's extras in brackets):
  0. [a play's `defaults:`, like role defaults]
  1. group `all` in inventory files
  2. other groups in inventory files, shallow groups first, then by `ansible_group_priority`,
     then by name
  3. group_vars/all, then group_vars/<group> in the order of 2
  4. the host's vars in inventory files, then host_vars/<host>
  5. [play `vars:` and `vars_files:`, registered results; -e extra vars always win]

Host patterns (`--hosts`, `--limit`, a play's `hosts:`) follow Ansible: see `Inventory.select`.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hostnames import expand, parse_host
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
LOCALHOST = ("localhost", "127.0.0.1", "::1")
YAML_SUFFIXES = (".yaml", ".yml", ".json")
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")


def fleet_vars(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Vars as fleet names them (Ansible's connection names translated, others kept)."""
    return {ANSIBLE_NAMES.get(str(key), str(key)): value for key, value in (raw or {}).items()}


def expand_range(pattern: str) -> list[str]:
    """`gh200-[01:16]` -> gh200-01 … gh200-16; `gh200-[01-04,07]` (Slurm) -> 5 names."""
    return expand(pattern)


def _warn_stderr(message: str) -> None:
    print(f"fleet: warning: {message}", file=sys.stderr)


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)  # written in inventory files
    file_vars: dict[str, Any] = field(default_factory=dict)  # from group_vars/
    children: dict[str, None] = field(default_factory=dict)  # ordered sets: O(1) membership
    parents: dict[str, None] = field(default_factory=dict)
    hosts: dict[str, None] = field(default_factory=dict)
    priority: int = 1


@dataclass
class Host:
    name: str
    vars: dict[str, Any]
    groups: list[str]


@dataclass
class Inventory:
    source: str
    groups: dict[str, Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # written in inventory files
    host_file_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # from host_vars/
    strict_hosts: bool = False  # a pattern element that matches nothing is an error, not a warning
    warn: Callable[[str], None] = _warn_stderr
    implicit: set[str] = field(default_factory=set)  # an implicit localhost, not in `all`

    def __post_init__(self) -> None:
        self.group("all")
        self.add_child("all", "ungrouped")
        self._cache: dict[Any, Any] = {}

    # ---- building -------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
            self._cache = {}
        return self.groups[name]

    def add_child(self, parent: str, child: str) -> None:
        if parent == child:
            raise FleetError(f"group {parent!r} cannot be its own child")
        self.group(parent).children[child] = None
        self.group(child).parents[parent] = None
        self._cache = {}

    def add_host(self, name: str, group: str = "ungrouped", hostvars: Mapping[str, Any] | None = None) -> None:
        if not name:
            raise FleetError(f"empty host name in group {group!r}")
        if name not in self.host_vars:
            self.host_vars[name] = {}
        if hostvars:
            self.host_vars[name].update(fleet_vars(hostvars))
        self.group(group).hosts[name] = None
        self._cache = {}

    def reconcile(self) -> None:
        """Ansible's rules once every source is read: groups without parents are children of
        `all`; a host in no group is in `ungrouped`, and leaves it once in another group."""
        for name, group in list(self.groups.items()):
            if name != "all" and not group.parents:
                self.add_child("all", name)
        ungrouped = self.groups["ungrouped"].hosts
        direct = self._direct_groups()
        for host in self.host_vars:
            mine = direct.get(host, set()) - {"all"}
            if not mine:
                ungrouped[host] = None
            elif host in ungrouped and mine - {"ungrouped"}:
                del ungrouped[host]
        self._cache = {}

    def _direct_groups(self) -> dict[str, set[str]]:
        direct: dict[str, set[str]] = {}
        for group in self.groups.values():
            for host in group.hosts:
                direct.setdefault(host, set()).add(group.name)
        return direct

    # ---- reading --------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        """Every host, in the order Ansible lists `all`."""
        return self.members("all")

    def _memo(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def depth(self, name: str) -> int:
        """Distance from `all` along the longest chain of parents (Ansible's group depth)."""

        def make() -> int:
            seen: set[str] = set()
            order: list[str] = []

            def visit(g: str) -> None:  # parents before children, iteratively deep-safe
                stack = [(g, iter(self.groups[g].parents))]
                seen.add(g)
                while stack:
                    node, parents = stack[-1]
                    for p in parents:
                        if p not in seen:
                            seen.add(p)
                            stack.append((p, iter(self.groups[p].parents)))
                            break
                    else:
                        order.append(node)
                        stack.pop()

            visit(name)
            depths: dict[str, int] = {}
            for g in order:
                ups = [depths[p] for p in self.groups[g].parents if p in depths]
                depths[g] = 0 if g == "all" else 1 + max(ups, default=0)
            return depths[name]

        return self._memo(("depth", name), make)

    def ancestors(self, name: str) -> set[str]:
        def make() -> set[str]:
            found: set[str] = set()
            todo = list(self.groups[name].parents)
            while todo:
                g = todo.pop()
                if g not in found:
                    found.add(g)
                    todo.extend(self.groups[g].parents)
            return found

        return self._memo(("ancestors", name), make)

    def descendants(self, name: str) -> list[str]:
        """The group and every group below it, level by level, as Ansible walks them."""

        def make() -> list[str]:
            order, seen = [name], {name}
            level = [name]
            while level:
                nxt = []
                for g in level:
                    for child in self.groups[g].children:
                        if child not in seen:
                            seen.add(child)
                            order.append(child)
                            nxt.append(child)
                level = nxt
            return order

        return self._memo(("descendants", name), make)

    def members(self, group: str) -> list[str]:
        """Hosts of a group and of the groups below it, in Ansible's order."""
        if group not in self.groups:
            return []

        def make() -> list[str]:
            out: dict[str, None] = {}
            for g in self.descendants(group):
                out.update(self.groups[g].hosts)
            return [h for h in out if not (group == "all" and h in self.implicit)]

        return self._memo(("members", group), make)

    def _host_groups(self) -> dict[str, list[str]]:
        return self._memo("host_groups", lambda: {h: sorted(gs) for h, gs in self._direct_groups().items()})

    def groups_of(self, host: str) -> list[str]:
        """Every group the host is in, directly or through children, in Ansible's merge order."""
        found: set[str] = set()
        for g in self._host_groups().get(host, ()):
            found.add(g)
            found |= self.ancestors(g)
        found.add("all")
        return sorted(found, key=lambda g: (self.depth(g), self.groups[g].priority, g))

    def host(self, name: str) -> Host:
        if name not in self.host_vars and name in LOCALHOST:
            self._add_implicit_localhost(name)
        groups = self.groups_of(name)
        merged: dict[str, Any] = {}
        for layer in ("vars", "file_vars"):
            for group in groups:
                merged.update(getattr(self.groups[group], layer))
        merged.update(self.host_vars.get(name, {}))
        merged.update(self.host_file_vars.get(name, {}))
        return Host(name, merged, [g for g in groups if g != "all"])

    def _add_implicit_localhost(self, name: str) -> None:
        """Ansible's implicit localhost: usable by name, local connection, not part of `all`."""
        self.implicit.add(name)
        self.host_vars[name] = {"connection": "local"}
        self._cache = {}

    # ---- patterns ------------------------------------------------------------------------
    def select(self, pattern: str | Iterable[str] | None) -> list[str]:
        """Hosts a pattern selects, in Ansible's order.

        Elements are separated by `,` (or `:` where that cannot be a port or a range); `!x`
        removes, `&g` keeps only hosts also in g (regular elements first, then `&`, then `!`).
        An element is a host, a group, a glob over both (`gh200-*`), a regex `~gh200-0[1-4]`, or
        `all`/`*`; `group[0]`, `group[-1]`, `group[1:3]` pick by position among what it matched.
        Where the part before `[` matches nothing, the brackets are a host range instead:
        `gh200-[01:04]` (Ansible's range) or `gh200-[01-04,07]` (a Slurm host list).
        `localhost` works without being listed. An element matching nothing is a warning
        naming it, or an error with strict_hosts."""
        elements = split_pattern(pattern)
        regular = [e for e in elements if e[0] not in "!&"] or ["all"]
        ordered = regular + [e for e in elements if e[0] == "&"] + [e for e in elements if e[0] == "!"]
        chosen: dict[str, None] = {}
        unmatched: list[str] = []
        for element in ordered:
            found = self._element(element[1:] if element[0] in "!&" else element, element)
            if not found and element != "all":
                unmatched.append(element)
            if element[0] == "!":
                drop = set(found)
                chosen = {h: None for h in chosen if h not in drop}
            elif element[0] == "&":
                keep = set(found)
                chosen = {h: None for h in chosen if h in keep}
            else:
                chosen.update(dict.fromkeys(found))
        if unmatched:
            named = ", ".join(map(repr, unmatched))
            message = f"host pattern element(s) {named} match no host or group in {self.source}"
            if self.strict_hosts:
                raise FleetError(f"{message} (--strict-hosts)")
            if chosen:  # an empty selection is an error of its own (require)
                self.warn(f"{message}; left out (--strict-hosts makes this an error)")
        return list(chosen)

    def _element(self, term: str, element: str) -> list[str]:
        if not term:
            raise FleetError(f"empty element {element!r} in a host pattern")
        if term in self.host_vars:
            return [term]
        found = self._match(term)
        if not found and term in LOCALHOST:
            # Ansible's one localhost: the first localhost-like host listed, else an implicit one
            # named by the first pattern that asks for it.
            known = next((h for h in self.host_vars if h in LOCALHOST), None)
            if known is None:
                self._add_implicit_localhost(term)
            found = [known or term]
        return found

    def _match(self, term: str) -> list[str]:
        if term.startswith("~"):
            return self._enumerate(term)
        subscript = _SUBSCRIPT.match(term)
        if subscript:
            matched = self._enumerate(subscript["base"])
            if matched:
                return _slice(matched, subscript, term)
        else:
            matched = self._enumerate(term)
            if matched or "[" not in term:
                return matched
        # Ansible's reading selected nothing: the brackets are a host range (fleet's rule).
        try:
            names = expand(term)
        except FleetError:
            return []
        return [h for h in names if h in self.host_vars and h not in self.implicit]

    def _enumerate(self, term: str) -> list[str]:
        """Ansible's matching of one element: groups it names (with their hosts), and hosts it
        names when no group matched or it is a glob/regex."""
        try:
            regex = re.compile(term[1:] if term.startswith("~") else fnmatch.translate(term))
        except re.error as exc:
            raise FleetError(f"bad host pattern {term!r}: {exc}") from None
        out: dict[str, None] = {}
        groups = [g for g in self.groups if regex.match(g)]
        for g in groups:
            out.update(dict.fromkeys(self.members(g)))
        if not groups or term.startswith("~") or any(c in term for c in ".?*["):
            if not term.startswith("~") and not any(c in term for c in "?*["):
                if term in self.host_vars:
                    out[term] = None
            else:
                out.update(dict.fromkeys(h for h in self.host_vars if h not in self.implicit and regex.match(h)))
        return list(out)

    def require(self, pattern: str | None) -> list[str]:
        hosts = self.select(pattern)
        if not hosts:
            known = ", ".join(sorted(set(self.groups) - {"all", "ungrouped"})[:8]) or "none"
            raise FleetError(
                f"host pattern {pattern!r} matches no host in {self.source} "
                f"(groups: {known}; try `fleet inventory -i {self.source}`)"
            )
        return hosts


_SUBSCRIPT = re.compile(r"^(?P<base>.+)\[(?:(?P<index>-?[0-9]+)|(?P<start>[0-9]+):(?P<end>[0-9]*))\]$")


def _slice(hosts: list[str], match: re.Match[str], term: str) -> list[str]:
    if match["index"] is not None:
        index = int(match["index"])
        if not -len(hosts) <= index < len(hosts):
            raise FleetError(f"host pattern {term!r}: position {index} is outside the {len(hosts)} host(s) matched")
        return [hosts[index]]
    start = int(match["start"])
    end = int(match["end"]) if match["end"] else len(hosts) - 1
    return hosts[start : end + 1]  # a slice past the end is empty, as in Ansible


def split_pattern(pattern: str | Iterable[str] | None) -> list[str]:
    """A pattern's elements: split on commas outside brackets; without commas, on colons that are
    neither part of a range, an IPv6 address nor a host:port (Ansible's old separator)."""
    if pattern is None:
        return ["all"]
    if not isinstance(pattern, str):
        return [e for p in pattern for e in split_pattern(p)]
    text = pattern.strip()
    if not text:
        raise FleetError("empty host pattern")
    if "," in text:
        parts = re.findall(r"(?:[^,\[\]]|\[[^\]]*\])+", text)
    elif _IPV6.match(text.lstrip("!&")):
        parts = [text]
    else:
        parts = re.findall(r"(?:[^\s:\[\]]|\[[^\]]*\])+", text)
    return [p.strip() for p in parts if p.strip()] or ["all"]


_IPV6 = re.compile(r"^[0-9a-fA-F]*:[0-9a-fA-F:.]*:[0-9a-fA-F:.]*$")


def check_connection_vars(host: str, hostvars: Mapping[str, Any]) -> None:
    """The connection variables of a host, checked before any host is touched (a template is
    checked once rendered, when the connection is made)."""

    def given(name: str) -> Any:
        value = hostvars.get(name)
        return None if value in (None, "") or (isinstance(value, str) and "{{" in value) else value

    port, timeout = given("port"), given("connect_timeout")
    if port is not None and not (str(port).isdigit() and 0 < int(port) < 65536):
        raise FleetError(f"host {host}: port {port!r} is not a TCP port number (1-65535)")
    if timeout is not None:
        try:
            ok = float(timeout) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise FleetError(f"host {host}: connect_timeout {timeout!r} is not a number of seconds")
    if given("connection") not in (None, "ssh", "local"):
        raise FleetError(f"host {host}: unknown connection type {given('connection')!r} (use ssh or local)")
    if given("host_key_checking") not in (None, "strict", "accept-new"):
        raise FleetError(f"host {host}: host_key_checking {given('host_key_checking')!r} is not strict or accept-new")


# ---- loading -------------------------------------------------------------------------------
def load_inventory(path: str | Path, *, warn: Callable[[str], None] | None = None) -> Inventory:
    """Read an inventory source: a file, a folder of sources, or `slurm`."""
    inv = Inventory(source=str(path), warn=warn or _warn_stderr)
    root = Path(path)
    if str(path) == "slurm" and not root.exists():
        _read_slurm(inv)
    elif not root.exists():
        raise FleetError(f"inventory {root} does not exist (pass -i PATH to a folder or hosts file)")
    elif root.is_dir():
        sources = _folder_sources(root)
        if not sources:
            raise FleetError(f"inventory folder {root} has no hosts.yaml (nor another Ansible INI/YAML inventory)")
        for file in sources:
            _read_source(inv, file)
        _read_vars_dirs(inv, root)
    else:
        _read_source(inv, root)
        _read_vars_dirs(inv, root.parent)
    inv.reconcile()
    _warn_ignored_ansible_names(inv)
    return inv


def _folder_sources(folder: Path) -> list[Path]:
    """Inventory files in a folder and its subfolders, in name order (group_vars/, host_vars/,
    hidden and backup/doc files left out), as Ansible reads a folder source."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith(IGNORED_SUFFIXES):
            continue
        if entry.is_dir() and entry.name not in ("group_vars", "host_vars"):
            found.extend(_folder_sources(entry))
        elif entry.is_file():
            found.append(entry)
    return found


def _read_source(inv: Inventory, file: Path) -> None:
    try:
        text = file.read_text()
    except UnicodeDecodeError:
        raise FleetError(f"{file}: not a UTF-8 text file") from None
    if file.suffix in YAML_SUFFIXES or _looks_yaml(text):
        _read_yaml(inv, file)
    else:
        _read_ini(inv, file, text)


def _looks_yaml(text: str) -> bool:
    """YAML in a file without a YAML suffix (Ansible would refuse it; fleet reads it)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped == "---" or (not stripped.startswith("[") and stripped.endswith(":") and "=" not in line)
    return False


def _read_slurm(inv: Inventory) -> None:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        raise FleetError("inventory `slurm` reads $SLURM_JOB_NODELIST, which is not set (run inside a Slurm job)")
    import hostlist

    try:
        names = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as exc:
        raise FleetError(f"$SLURM_JOB_NODELIST {nodelist!r} is not a Slurm host list: {exc}") from None
    for name in names:
        inv.add_host(name, "slurm")


def _warn_ignored_ansible_names(inv: Inventory) -> None:
    names = set()
    for layer in (*(g.vars for g in inv.groups.values()), *(g.file_vars for g in inv.groups.values())):
        names |= {k for k in layer if k.startswith("ansible_")}
    for layer in (*inv.host_vars.values(), *inv.host_file_vars.values()):
        names |= {k for k in layer if k.startswith("ansible_")}
    if names:
        inv.warn(
            f"{inv.source}: fleet does not use these Ansible variables: {', '.join(sorted(names))} "
            f"(it maps {', '.join(sorted(ANSIBLE_NAMES))})"
        )


# ---- YAML ----------------------------------------------------------------------------------
def _read_yaml(inv: Inventory, file: Path) -> None:
    data = load_yaml(file)
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise FleetError(f"{file}: an inventory is a mapping of groups (e.g. `all:` with `hosts:`)")
    if "plugin" in data:
        raise FleetError(f"{file}: an inventory plugin configuration (`plugin:`), which fleet does not run")
    for name, body in data.items():
        _read_group(inv, file, str(name), body, parent=None)


def _read_group(inv: Inventory, file: Path, name: str, body: Any, parent: str | None) -> None:
    group = inv.group(name)
    if parent:
        inv.add_child(parent, name)
    if body is None:
        return
    if not isinstance(body, Mapping):
        raise FleetError(f"{_where(file, body)}: group {name!r} must be a mapping with hosts/vars/children")
    unknown = set(body) - {"hosts", "vars", "children"}
    if unknown:
        raise FleetError(
            f"{_where(file, body)}: group {name!r} has unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            "(allowed: hosts, vars, children)"
        )
    group_vars = body.get("vars") or {}
    if not isinstance(group_vars, Mapping):
        raise FleetError(f"{_where(file, body)}: vars of group {name!r} must be a mapping")
    _set_group_vars(inv, group, group_vars, f"{_where(file, body)}")
    hosts = body.get("hosts") or {}
    if isinstance(hosts, str):
        hosts = {hosts: None}
    if isinstance(hosts, list):
        hosts = dict.fromkeys(hosts)
    if not isinstance(hosts, Mapping):
        raise FleetError(f"{_where(file, body)}: hosts of group {name!r} must be a mapping")
    for entry, hostvars in hosts.items():
        if hostvars is not None and not isinstance(hostvars, Mapping):
            raise FleetError(f"{_where(file, hosts)}: vars of host {entry!r} must be a mapping")
        if not isinstance(entry, str):
            raise FleetError(f"{_where(file, hosts)}: host {entry!r} must be a string (quote it)")
        _add_hosts(inv, entry, name, hostvars or {}, _where(file, hosts))
    children = body.get("children") or {}
    if isinstance(children, str):
        children = {children: None}
    if not isinstance(children, Mapping):
        raise FleetError(f"{_where(file, body)}: children of group {name!r} must be a mapping")
    for child, child_body in children.items():
        _read_group(inv, file, str(child), child_body, parent=name)


def _set_group_vars(inv: Inventory, group: Group, values: Mapping[str, Any], where: str) -> None:
    for key, value in values.items():
        if key == "ansible_group_priority":
            try:
                group.priority = int(value)
            except (TypeError, ValueError):
                raise FleetError(f"{where}: ansible_group_priority of {group.name!r} must be a number") from None
            inv._cache = {}
        else:
            group.vars.update(fleet_vars({key: value}))


def _add_hosts(inv: Inventory, entry: str, group: str, hostvars: Mapping[str, Any], where: str) -> None:
    try:
        names, port = parse_host(entry)
    except FleetError as exc:
        raise FleetError(f"{where}: {exc}") from None
    for name in names:
        inv.add_host(name, group, {**({"port": port} if port is not None else {}), **hostvars})


def _where(file: Path, node: Any) -> str:
    line = getattr(node, "line", None)
    return f"{file}:{line}" if line else str(file)


# ---- INI -----------------------------------------------------------------------------------
_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def _read_ini(inv: Inventory, file: Path, text: str) -> None:
    """Ansible's INI: `[group]`, `[group:vars]`, `[group:children]`; hosts before any section are
    ungrouped; values are Python literals where they parse as one (else strings)."""
    section, kind = "ungrouped", "hosts"
    pending: dict[str, tuple[int, str, str]] = {}  # a group used before it is declared: line, kind, parent
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{file}:{number}"
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        header = _SECTION.match(line)
        if header:
            section, kind = header.group(1), header.group(2) or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise FleetError(f"{where}: section [{section}:{kind}] has unknown kind (use :vars or :children)")
            if section not in inv.groups and kind == "vars":
                pending.setdefault(section, (number, "vars", ""))
            inv.group(section)
            if kind != "vars":
                pending.pop(section, None)  # declared now: earlier uses were fine
            continue
        if line.startswith("[") and "]" not in line:
            raise FleetError(f"{where}: unclosed section header {line!r}")
        if line.startswith("[") and line.endswith("]"):
            raise FleetError(f"{where}: invalid section {line!r} (no spaces or odd characters in [group:kind])")
        if kind == "hosts":
            try:  # shlex with comments, as Ansible; the same split, without shlex, where nothing is quoted
                words = _PLAIN_WORDS(line.partition("#")[0]) if _UNQUOTED(line) else shlex.split(line, comments=True)
            except ValueError as exc:
                raise FleetError(f"{where}: {exc} in host line {line!r}") from None
            if not words:
                continue
            hostvars = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise FleetError(f"{where}: expected key=value after host name, got {word!r}")
                hostvars[key] = ini_value(value)
            _add_hosts(inv, words[0], section, hostvars, where)
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise FleetError(f"{where}: expected key=value in [{section}:vars], got {line!r}")
            _set_group_vars(inv, inv.group(section), {key.strip(): ini_value(value.strip())}, where)
        else:
            match = _GROUP_NAME.match(line)
            if not match:
                raise FleetError(f"{where}: expected a group name in [{section}:children], got {line!r}")
            child = match.group(1)
            if child not in inv.groups:
                pending.setdefault(child, (number, "children", section))
            inv.add_child(section, child)
    for name, (number, kind, parent) in pending.items():
        if kind == "vars":
            raise FleetError(f"{file}:{number}: section [{name}:vars] is for group {name!r}, which is never declared")
        raise FleetError(f"{file}:{number}: [{parent}:children] names group {name!r}, which is never declared")


_UNQUOTED = re.compile(r"^[^'\"\\]*$").match
_PLAIN_WORDS = re.compile(r"[^ \t\r\n]+").findall
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^[A-Za-z_][\w.-]*[-.][\w.-]*$").match
_NUMBER = re.compile(r"^-?[1-9][0-9]{0,17}$|^0$").match


def ini_value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal if it is one (`22`, `True`, `[1, 2]`),
    else the text (`0644`, `10:30`, `yes`, `true`, `~` stay strings)."""
    if _NUMBER(text):  # the common cases, without compiling Python
        return int(text)
    if _WORD(text) and text not in ("True", "False", "None"):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _plain_literal(value)


def _plain_literal(value: Any) -> Any:
    if isinstance(value, list | tuple | set):
        return [_plain_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_literal(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="surrogateescape")
    if value is ... or isinstance(value, complex):
        return str(value) if value is not ... else "..."
    return value


# ---- group_vars/ and host_vars/ -----------------------------------------------------------
def vars_files(folder: Path, name: str) -> list[Path]:
    """Ansible's lookup: the first of NAME, NAME.yml, NAME.yaml, NAME.json that exists; a folder
    gives every file in it (and below), in name order, hidden and backup files skipped."""
    for suffix in ("", ".yml", ".yaml", ".json"):
        path = folder / (name + suffix)
        if path.is_dir():
            return _folder_files(path)
        if path.is_file():
            return [path]
    return []


def _folder_files(folder: Path) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            found.extend(_folder_files(entry))
        elif entry.is_file() and entry.suffix in ("", *YAML_SUFFIXES):
            found.append(entry)
    return found


def _load_vars(file: Path) -> dict[str, Any]:
    data = load_yaml(file)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise FleetError(f"{file}: variables must be a mapping of name: value")
    return dict(data)


def _read_vars_dirs(inv: Inventory, base: Path) -> None:
    group_dir, host_dir = base / "group_vars", base / "host_vars"
    if group_dir.is_dir():
        for name, group in inv.groups.items():
            for file in vars_files(group_dir, name):
                data = _load_vars(file)
                data.pop("ansible_group_priority", None)  # Ansible reads it only in inventory files
                group.file_vars.update(fleet_vars(data))
    if host_dir.is_dir():
        for name in inv.host_vars:
            for file in vars_files(host_dir, name):
                inv.host_file_vars.setdefault(name, {}).update(fleet_vars(_load_vars(file)))
