"""`command` and `shell`: run something, unless `creates` already exists / `removes` is gone."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

from .. import shell
from ..model import CommandResult, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action


@dataclass(frozen=True)
class Guards:
    """Whether the `creates` and `removes` paths exist (None: not given)."""

    creates_exists: bool | None = None
    removes_exists: bool | None = None

    @classmethod
    def of(cls, result: CommandResult) -> Guards:
        seen = result.stdout.split()
        return cls(
            True if "creates-present" in seen else False if "creates-absent" in seen else None,
            True if "removes-present" in seen else False if "removes-absent" in seen else None,
        )


class CommandArgs(Args):
    cmd: str | list[str]
    chdir: str | None = None
    creates: str | None = None
    removes: str | None = None


class ShellArgs(CommandArgs):
    executable: str = "sh"


@action
class Command(Action):
    """Run a program with arguments (no shell features: every word is quoted)."""

    name = "command"
    Args: ClassVar = CommandArgs

    def probe(self) -> Probe[Guards] | None:
        a = self.args
        if not (a.creates or a.removes):
            return None
        checks = []
        if a.creates:
            checks.append(f"[ -e {shell.path(a.creates)} ] && echo creates-present || echo creates-absent")
        if a.removes:
            checks.append(f"[ -e {shell.path(a.removes)} ] && echo removes-present || echo removes-absent")
        return Probe("; ".join(checks), Guards.of, inline=True)  # builtin tests only: no fork needed

    def command_text(self) -> str:
        cmd = self.args.cmd
        words = cmd if isinstance(cmd, list) else shlex.split(cmd)
        return " ".join(shell.path(str(w)) for w in words)  # `~/x` still means the home folder

    def plan(self, guards: Guards | None, ctx: Context) -> Plan:
        if guards and guards.creates_exists:
            return Plan(summary=f"{self.args.creates} exists")
        if guards and guards.removes_exists is False:
            return Plan(summary=f"{self.args.removes} does not exist")
        text = self.command_text()
        if self.args.chdir:
            text = f"cd {shell.path(self.args.chdir)} && {text}"
        return Plan(script=text + "\n", summary=f"run {_short(self.command_text())}", always_runs=True)


@action
class Shell(Command):
    """Run a shell snippet (pipes, redirects, variables) with sh, or `executable: bash`."""

    name = "shell"
    Args: ClassVar = ShellArgs

    def command_text(self) -> str:
        cmd = self.args.cmd if isinstance(self.args.cmd, str) else shlex.join(self.args.cmd)
        if self.args.executable == "sh":
            return cmd
        return f"{shlex.quote(self.args.executable)} -c {shlex.quote(cmd)}"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
