"""Playbooks: YAML files or Python modules that yield validated plays of tasks.

YAML:
    - name: base
      hosts: gh200
      vars: {project_dir: ~/tes_grpo_trl}
      tasks:
        - name: build tools
          apt: {packages: [build-essential, git]}
          become: true

`defaults:` are a play's variables of lowest precedence (below inventory group/host vars, unlike
`vars:`), so a playbook can ship defaults that an inventory's group_vars override. A default may
use the other variables (`venv: "{{ project_dir }}/.venv"`); it is rendered per host and task.

Python (the same objects):
    from fleet import Play, Task
    PLAYS = [Play(hosts="gh200", tasks=[Task("apt", {"packages": ["git"]}, become=True)])]
"""

from __future__ import annotations

import runpy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .model import FleetError
from .task import KEYWORDS, Task, lookup
from .yamlfile import line_of, load_yaml

PLAY_KEYS = (
    "name", "hosts", "vars", "tasks", "become", "become_user", "serial", "gather_facts", "environment", "tags",
    "vars_files", "defaults",
)  # fmt: skip


@dataclass(frozen=True)
class Play:
    hosts: str = "all"
    tasks: Sequence[Task] = ()
    name: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # below inventory vars; may use templates
    become: bool = False
    become_user: str = "root"
    serial: int | str | None = None
    gather_facts: bool = True
    environment: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    source: str = "<python>"
    base_dir: str = "."  # where relative `src:` files are found

    @property
    def title(self) -> str:
        return self.name or f"hosts {self.hosts}"


@dataclass(frozen=True)
class Playbook:
    path: str
    plays: tuple[Play, ...]

    @property
    def base(self) -> Path:
        return Path(self.path).parent


def load_playbook(path: str | Path) -> Playbook:
    p = Path(path)
    if not p.is_file():
        raise FleetError(f"playbook {p} does not exist")
    if p.suffix == ".py":
        return _load_python(p)
    return Playbook(str(p), tuple(_plays_from_yaml(p, load_yaml(p))))


def _load_python(p: Path) -> Playbook:
    try:
        namespace = runpy.run_path(str(p))
    except FleetError:
        raise
    except Exception as exc:  # a person's Python file: say where it broke, in one line
        raise FleetError(f"{p}: {type(exc).__name__}: {exc}") from None
    plays = namespace.get("PLAYS") or namespace.get("plays")
    if plays is None and callable(namespace.get("playbook")):
        plays = namespace["playbook"]()
    if not plays or not all(isinstance(x, Play) for x in plays):
        raise FleetError(f"{p}: a Python playbook defines PLAYS = [Play(...), ...]")
    plays = [x if x.base_dir != "." else replace(x, base_dir=str(p.parent)) for x in plays]
    return Playbook(str(p), tuple(plays))


def _plays_from_yaml(p: Path, data: Any) -> list[Play]:
    if not isinstance(data, list) or not data:
        raise FleetError(f"{p}: a playbook is a list of plays (`- hosts: ...` with `tasks:`)")
    plays = []
    for raw in data:
        where = f"{p}:{line_of(raw) or 1}"
        if not isinstance(raw, Mapping):
            raise FleetError(f"{where}: each play is a mapping with hosts and tasks")
        unknown = sorted(set(map(str, raw)) - set(PLAY_KEYS))
        if unknown:
            raise FleetError(f"{where}: unknown play key {unknown[0]!r} (allowed: {', '.join(PLAY_KEYS)})")
        if "hosts" not in raw:
            raise FleetError(f"{where}: play has no `hosts:` (a host pattern such as all or gh200-*)")
        variables = _mapping(where, "vars", raw.get("vars"))
        for extra in raw.get("vars_files") or []:
            loaded = load_yaml(p.parent / str(extra))
            if not isinstance(loaded, Mapping):
                raise FleetError(f"{p.parent / str(extra)}: vars file must be a mapping")
            variables.update(loaded)
        defaults = raw.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise FleetError(f"{where}: `defaults:` must be a mapping of variable names to values")
        tasks_raw = raw.get("tasks") or []
        if not isinstance(tasks_raw, list):
            raise FleetError(f"{where}: `tasks:` must be a list")
        plays.append(
            Play(
                hosts=",".join(map(str, raw["hosts"])) if isinstance(raw["hosts"], list) else str(raw["hosts"]),
                tasks=tuple(_task_from_yaml(p, t) for t in tasks_raw),
                name=raw.get("name"),
                vars=variables,
                defaults=dict(defaults),
                become=bool(raw.get("become", False)),
                become_user=str(raw.get("become_user", "root")),
                serial=raw.get("serial"),
                gather_facts=bool(raw.get("gather_facts", True)),
                environment=_mapping(where, "environment", raw.get("environment")),
                tags=_tags(raw.get("tags"), where),
                source=where,
                base_dir=str(p.parent),
            )
        )
    return plays


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if not isinstance(value, list):
        raise FleetError(f"{where}: `tags:` must be a list of names (or a comma list)")
    return tuple(str(t) for t in value)


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FleetError(f"{where}: `{key}:` must be a mapping of names to values")
    return dict(value)


def _task_from_yaml(p: Path, raw: Any) -> Task:
    where = f"{p}:{line_of(raw) or 1}"
    if not isinstance(raw, Mapping):
        raise FleetError(f"{where}: each task is a mapping such as `- name: ...` with one task type")
    actions = [k for k in raw if k not in KEYWORDS]
    title = raw.get("name") or (actions[0] if actions else "?")
    if not actions:
        raise FleetError(f"{where}: task {title!r} names no task type (e.g. command:, apt:, copy:)")
    if len(actions) > 1:
        for name in actions:  # say which key is the stray one
            try:
                lookup(str(name))
            except FleetError:
                raise FleetError(f"{where}: task {title!r}: unknown task type or keyword {name!r}") from None
        raise FleetError(f"{where}: task {title!r} has several task types: {', '.join(map(str, actions))}")
    name = str(actions[0])
    try:
        lookup(name)
    except FleetError as exc:
        raise FleetError(f"{where}: task {title!r}: {exc}") from None
    args = raw[name]
    if args is None:
        args = {}
    elif isinstance(args, str):
        args = {"cmd": args} if name in ("command", "shell") else None
        if args is None:
            raise FleetError(f"{where}: task {title!r}: {name} takes a mapping of arguments")
    elif not isinstance(args, Mapping):
        raise FleetError(f"{where}: task {title!r}: {name} takes a mapping of arguments")
    return Task(
        action=name,
        args=dict(args),
        name=raw.get("name"),
        when=raw.get("when"),
        loop=raw.get("loop"),
        register=raw.get("register"),
        tags=_tags(raw.get("tags"), where),
        become=raw.get("become"),
        become_user=raw.get("become_user"),
        environment=_mapping(where, "environment", raw.get("environment")),
        ignore_errors=bool(raw.get("ignore_errors", False)),
        changed_when=raw.get("changed_when"),
        failed_when=raw.get("failed_when"),
        timeout=raw.get("timeout"),
        no_log=bool(raw.get("no_log", False)),
        source=where,
    )
