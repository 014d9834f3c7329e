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

import re
import runpy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .model import FleetError, RunReport
from .task import KEYWORDS, Task, describe_validation, lookup
from .templating import (
    TemplateError,
    as_bool,
    compile_check,
    compile_expression_check,
    compile_file,
    has_template,
    is_template,
)
from .yamlfile import line_of, load_yaml

PLAY_KEYS = (
    "name", "hosts", "vars", "tasks", "become", "become_user", "serial", "gather_facts", "environment", "tags",
    "vars_files", "defaults", "secrets", "any_errors_fatal", "max_fail_percentage",
)  # fmt: skip


@dataclass(frozen=True)
class Play:
    hosts: str = "all"
    tasks: Sequence[Task] = ()
    name: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # below inventory vars; may use templates
    become: bool | str = False  # a str is a template giving a boolean, decided per host
    become_user: str = "root"
    serial: int | str | None = None
    gather_facts: bool | str = True
    environment: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    source: str = "<python>"
    base_dir: str = "."  # where relative `src:` files are found
    secrets: tuple[str, ...] = ()  # more variable names whose values are masked (see fleet/secrets.py)
    any_errors_fatal: bool = False  # one host's failure stops the run after the batch (fleet/runner.py)
    max_fail_percentage: float | None = None  # more of a batch failing than this stops the run
    # Who takes part, decided when the play starts from the run so far (fleet/runner.py `_gated`):
    # gate(report, hosts) -> per host: variables to run with, a reason to fail it without running,
    # or None to sit the play out. `fleet train` uses it for its multi-node barrier and peer stops.
    gate: Callable[[RunReport, list[str]], Mapping[str, Mapping[str, Any] | str | None]] | None = None

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
    playbook = _load_python(p) if p.suffix == ".py" else Playbook(str(p), tuple(_plays_from_yaml(p, load_yaml(p))))
    for play in playbook.plays:
        for task in play.tasks:
            check_task(task, play)
    return playbook


SPECIAL_TAGS = frozenset({"all", "always", "never", "tagged", "untagged"})


def all_tags(playbook: Playbook) -> set[str]:
    return {t for play in playbook.plays for task in play.tasks for t in (*play.tags, *task.tags)}


def check_tags(playbook: Playbook, *selections: Iterable[str]) -> None:
    """`--tags`/`--skip-tags` naming a tag no task has is a typo that would run nothing: an error."""
    known = all_tags(playbook)
    for selection in selections:
        unknown = sorted(set(selection) - known - SPECIAL_TAGS)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise FleetError(f"{playbook.path}: no task has the tag {unknown[0]!r} (tags in this playbook: {listed})")


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
        _compiled(where, "vars", variables)
        vars_files = raw.get("vars_files") or []
        if not isinstance(vars_files, list):
            vars_files = [vars_files]
        for extra in vars_files:
            if not isinstance(extra, str):
                raise FleetError(f"{where}: `vars_files:` is a list of file names, got {extra!r}")
            loaded = load_yaml(p.parent / extra)
            if not isinstance(loaded, Mapping):
                raise FleetError(f"{p.parent / extra}: vars file must be a mapping")
            _compiled(str(p.parent / extra), "vars", loaded)
            variables.update(loaded)
        defaults = raw.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise FleetError(f"{where}: `defaults:` must be a mapping of variable names to values")
        _compiled(where, "defaults", defaults)
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
                become=_flag(raw, "become", False, where),
                become_user=_compiled(where, "become_user", str(raw.get("become_user", "root"))),
                serial=raw.get("serial"),
                gather_facts=_flag(raw, "gather_facts", True, where),
                environment=_environment(where, raw.get("environment")),
                tags=_tags(raw.get("tags"), where),
                source=where,
                base_dir=str(p.parent),
                secrets=_names(raw.get("secrets"), where),
                any_errors_fatal=_failure_flag(raw, where),
                max_fail_percentage=_percentage(raw.get("max_fail_percentage"), where),
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


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool | str:
    """A boolean keyword: a real boolean, a word Ansible reads as one (yes/no/true/false), or a
    template that will give one. `become: "false"` is false, never truthy text."""
    value = raw.get(key, default)
    if is_template(value):
        return _compiled(where, key, value)
    try:
        return as_bool(value, f"`{key}:`")
    except TemplateError as exc:
        raise FleetError(f"{where}: {exc}") from None


def _failure_flag(raw: Mapping[str, Any], where: str) -> bool:
    value = _flag(raw, "any_errors_fatal", False, where)
    if not isinstance(value, bool):
        raise FleetError(f"{where}: `any_errors_fatal:` must be true or false (it applies to the whole play)")
    return value


def _percentage(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        share = float(str(value).rstrip("%")) if not isinstance(value, bool) else -1.0
    except ValueError:
        share = -1.0
    if not 0 <= share <= 100:
        raise FleetError(f"{where}: `max_fail_percentage:` must be a number from 0 to 100, got {value!r}")
    return share


def _compiled(where: str, key: str, value: Any) -> Any:
    """value, after compiling every template in it: a Jinja syntax error fails the load."""
    try:
        compile_check(value)
    except TemplateError as exc:
        raise FleetError(f"{where}: `{key}:`: {exc}") from None
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _environment(where: str, value: Any) -> dict[str, Any]:
    env = _mapping(where, "environment", value)
    for name in env:
        if isinstance(name, str) and is_template(name):  # Ansible leaves them as written too
            raise FleetError(
                f"{where}: `environment:` name {name!r} is a template; names are not templated, write it out"
            )
        if not (isinstance(name, str) and _ENV_NAME.fullmatch(name)):
            raise FleetError(f"{where}: `environment:` name {name!r} is not a valid environment variable name")
    return _compiled(where, "environment", env)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise FleetError(f"{where}: `secrets:` must be a list of variable names (e.g. [wandb_key])")
    return tuple(value)


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
    register = raw.get("register")
    if register is not None and not (isinstance(register, str) and _VARIABLE.fullmatch(register)):
        raise FleetError(f"{where}: task {title!r}: `register:` takes one variable name, got {register!r}")
    for key in ("when", "changed_when", "failed_when", "until"):
        try:
            compile_expression_check(raw.get(key))
        except TemplateError as exc:
            raise FleetError(f"{where}: task {title!r}: `{key}:`: {exc}") from None
    for key in ("name", "loop", "become_user"):
        _compiled(f"{where}: task {title!r}", key, raw.get(key))
    return Task(
        action=name,
        args=_compiled(f"{where}: task {title!r}", name, dict(args)),
        name=raw.get("name"),
        when=raw.get("when"),
        loop=raw.get("loop"),
        register=register,
        tags=_tags(raw.get("tags"), where),
        become=_flag(raw, "become", None, where) if raw.get("become") is not None else None,
        become_user=raw.get("become_user"),
        environment=_environment(where, raw.get("environment")),
        ignore_errors=_flag(raw, "ignore_errors", False, where),
        changed_when=raw.get("changed_when"),
        failed_when=raw.get("failed_when"),
        timeout=raw.get("timeout"),
        no_log=_flag(raw, "no_log", False, where),
        retries=raw.get("retries"),
        until=raw.get("until"),
        delay=raw.get("delay", 5.0),
        source=where,
    )


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_task(task: Task, play: Play) -> None:
    """What can be known before any host is touched: argument types and values that hold no
    template (a mode, a number), and the local files a task reads (template/copy `src`)."""
    where = f"{task.source}: task {task.title!r}"
    for keyword, owner in (("become", task), ("ignore_errors", task), ("no_log", task), ("become", play),
                           ("gather_facts", play)):  # fmt: skip
        value = getattr(owner, keyword)
        if value is not None and not isinstance(value, bool) and not is_template(value):
            try:  # a Python playbook's Task/Play: YAML ones were converted when read
                as_bool(value, f"`{keyword}:`")
            except TemplateError as exc:
                raise FleetError(f"{where}: {exc}") from None
    cls = lookup(task.action)
    known = {k: v for k, v in task.args.items() if not has_template(v)}
    if isinstance(known.get("mode"), int):  # said before the type error, which would not say why
        mode = known["mode"]
        raise FleetError(f"{where}: mode {mode!r} is a number (YAML reads 0644 as one): quote it, mode: '0644'")
    validated: Any = None
    try:
        validated = cls.Args.model_validate(known)
    except ValidationError as exc:
        wrong = [e for e in exc.errors() if not (e["type"] == "missing" and e["loc"] and e["loc"][0] in task.args)]
        if wrong:
            details = [{k: e[k] for k in ("type", "loc", "input", "ctx") if k in e} for e in wrong]
            error = ValidationError.from_exception_data(exc.title, details)  # type: ignore[arg-type]
            raise FleetError(f"{where}: {task.action}: {describe_validation(error)}") from None
    regexp = known.get("regexp")
    if isinstance(regexp, str):
        try:
            re.compile(regexp)
        except re.error as exc:
            raise FleetError(f"{where}: regexp {regexp!r} is not a valid regular expression: {exc}") from None
    mode = known.get("mode")
    if mode is not None and not _OCTAL.fullmatch(str(mode)):
        raise FleetError(f"{where}: mode {mode!r} is not an octal mode such as '0644'")
    src = known.get("src")
    if task.action in ("template", "copy") and isinstance(src, str):
        path = Path(src) if Path(src).is_absolute() else Path(play.base_dir) / src
        if not path.is_file():
            raise FleetError(f"{where}: {task.action} source file {path} does not exist")
        if task.action == "template":
            try:
                compile_file(path)
            except TemplateError as exc:
                raise FleetError(f"{where}: {exc}") from None
    if task.loop is not None and not has_template(task.loop) and not isinstance(task.loop, list):
        raise FleetError(f"{where}: `loop:` must be a list (or a template that gives one)")
    if validated is not None and len(known) == len(task.args):  # no template: the action's own checks now
        try:
            cls(validated).check()
        except FleetError as exc:
            raise FleetError(f"{where}: {exc}") from None


_OCTAL = re.compile(r"0?[0-7]{3}|[0-7]{4}")
