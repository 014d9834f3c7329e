"""The task model: an Action observes a host with one probe script and plans purely from what it
saw; a Task is an Action in a playbook, with its keywords (when, loop, register, ...)."""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .model import CommandResult, FleetError, Plan


class Args(BaseModel):
    """Base of every action's arguments: unknown names are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Context:
    """What a planner may look at besides its probe's output."""

    host: str
    facts: Any = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    check: bool = False


class Action:
    """One kind of task. Subclasses set `name` and `Args`, and implement `plan` (and `probe`
    when they need to look at the host first). Both must be pure: no I/O, no clock."""

    name: ClassVar[str]
    Args: ClassVar[type[Args]]
    # Actions whose apply only reads (e.g. a check) still run in --check mode.
    read_only: ClassVar[bool] = False
    # The fact groups (fleet/factuse.py) the action reads from ctx.facts in Python. A play gathers
    # only the groups its templates and actions name; reading another fails. Not said (None): all
    # of them for an action written outside fleet, none for fleet's own.
    facts_used: ClassVar[frozenset[str] | None] = None

    def __init__(self, args: Args) -> None:
        self.args = args

    def probe(self) -> str | None:
        """A script whose output tells the host's current state, or None if none is needed."""
        return None

    def check(self) -> None:
        """Raise FleetError for arguments that are wrong whatever the host (run at load when no
        argument is a template, so a bad task fails before any host is touched)."""

    def plan(self, observed: CommandResult | None, ctx: Context) -> Plan:
        raise NotImplementedError

    def verdict(self, plan: Plan, result: CommandResult, ctx: Context) -> tuple[bool, str] | None:
        """After an apply that exited 0: (failed, message) when what it printed, not its exit
        code, says how it went (a job that died while its launch watched it); None: changed."""
        return None

    def applied(self, plan: Plan, result: CommandResult, ctx: Context) -> Mapping[str, Any]:
        """Data to register after the apply script ran (stdout etc.)."""
        return output_data(result)


def output_data(result: CommandResult) -> dict[str, Any]:
    """What a command registers, as ansible-core's command module gives it: `rc`, `stdout` and
    `stderr` without their trailing newlines (`"{{ out.stdout }}/bin"` is one line), and
    `stdout_lines`/`stderr_lines`."""
    stdout, stderr = result.stdout.rstrip("\r\n"), result.stderr.rstrip("\r\n")
    return {
        "rc": result.exited,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_lines": stdout.splitlines(),
        "stderr_lines": stderr.splitlines(),
    }


ACTIONS: dict[str, type[Action]] = {}


def action(cls: type[Action]) -> type[Action]:
    """Class decorator: make an action available to playbooks under its name."""
    ACTIONS[cls.name] = cls
    return cls


def lookup(name: str) -> type[Action]:
    if name not in ACTIONS:
        from . import tasks

        tasks.load(name)  # importing a task module registers its actions
    try:
        return ACTIONS[name]
    except KeyError:
        raise FleetError(f"unknown task type {name!r} (known: {', '.join(sorted(ACTIONS))})") from None


def describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        kind = item["type"]
        if kind == "missing":
            parts.append(f"missing required argument {where!r}")
        elif kind == "extra_forbidden":
            parts.append(f"unknown argument {where!r}")
        else:
            parts.append(f"argument {where!r}: {item['msg']}")
    return "; ".join(parts)


def build(action_name: str, args: Mapping[str, Any]) -> Action:
    cls = lookup(action_name)
    try:
        return cls(cls.Args.model_validate(dict(args)))
    except ValidationError as exc:
        raise FleetError(f"{action_name}: {describe_validation(exc)}") from None


def precheck(action_name: str, args: Mapping[str, Any]) -> None:
    """Load-time check of what can be known before templates render: the action exists, no
    unknown argument names, every required argument given."""
    cls = lookup(action_name)
    fields = cls.Args.model_fields
    unknown = sorted(set(map(str, args)) - set(fields))
    if unknown:
        raise FleetError(f"{action_name}: unknown argument {unknown[0]!r} (allowed: {', '.join(sorted(fields))})")
    missing = [name for name, f in fields.items() if f.is_required() and name not in args]
    if missing:
        raise FleetError(f"{action_name}: missing required argument {missing[0]!r}")


KEYWORDS = (
    "name", "when", "loop", "register", "tags", "become", "become_user", "environment",
    "ignore_errors", "changed_when", "failed_when", "timeout", "no_log", "retries", "until", "delay",
)  # fmt: skip


@dataclass(frozen=True)
class Task:
    """An action in a playbook. The same object comes from YAML and from Python playbooks."""

    action: str
    args: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    when: Any = None
    loop: Any = None
    register: str | None = None
    tags: tuple[str, ...] = ()
    become: bool | None = None
    become_user: str | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)
    ignore_errors: bool = False
    changed_when: Any = None
    failed_when: Any = None
    timeout: float | None = None
    no_log: bool = False
    retries: int | None = None  # with `until` (or alone: until it does not fail); Ansible's default 3
    until: Any = None
    delay: float = 5.0  # seconds between attempts
    source: str = "<python>"

    def __post_init__(self) -> None:
        if self.source == "<python>":  # made in Python: errors name the file and line that made it
            caller = sys._getframe(2)  # 0: here, 1: the dataclass __init__
            object.__setattr__(self, "source", f"{caller.f_code.co_filename}:{caller.f_lineno}")
        try:
            precheck(self.action, self.args)
        except FleetError as exc:
            raise FleetError(f"{self.source}: task {self.title!r}: {exc}") from None
        if isinstance(self.tags, str):
            object.__setattr__(self, "tags", (self.tags,))
        if self.timeout is not None:
            try:
                seconds = float(self.timeout)
            except (TypeError, ValueError):
                seconds = 0.0
            if not seconds > 0:
                raise FleetError(f"{self.source}: task {self.title!r}: timeout must be a number of seconds")
            object.__setattr__(self, "timeout", seconds)
        if self.retries is not None and (isinstance(self.retries, bool) or not isinstance(self.retries, int)
                                         or self.retries < 0):  # fmt: skip
            raise FleetError(f"{self.source}: task {self.title!r}: retries must be a whole number, 0 or more")
        try:
            delay = float(self.delay)
        except (TypeError, ValueError):
            delay = -1.0
        if not 0 <= delay <= 3600:
            raise FleetError(f"{self.source}: task {self.title!r}: delay must be 0 to 3600 seconds")
        object.__setattr__(self, "delay", delay)

    @property
    def title(self) -> str:
        return self.name or self.action

    def decided(self, **keywords: Any) -> Task:
        """This task with keywords decided for one host (plain values by now). Not dataclasses'
        replace(): that checks the whole task again, for every task on every host."""
        task = copy.copy(self)
        for name, value in keywords.items():
            object.__setattr__(task, name, value)
        return task
