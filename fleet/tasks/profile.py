"""`profile`: an environment variable exported from a shell file that fleet owns (~/.fleet/env.sh),
and that file sourced from the user's ~/.bashrc. One line per variable, found again by its marker
comment, so re-runs change nothing; `prepend`/`append` add a path only when it is not already there,
so sourcing the file twice does not grow the variable."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .files import FileState, edit_lines, file_script, plan_content

ENV_FILE = "~/.fleet/env.sh"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPLIT = "@@fleet-next-file"


def marker(name: str) -> str:
    return f"# fleet: {name}"


def export_line(name: str, value: str | None, prepend: str | None, append: str | None) -> str:
    """The shell line that sets the variable. Paths may start with `~/` (the user's home)."""
    if value is not None:
        return f"export {name}={shell.path(value)} {marker(name)}"
    part = shell.path(prepend if prepend is not None else append or "")
    joined = f'{part}"${{{name}:+:${name}}}"' if prepend is not None else f'"${{{name}:+${name}:}}"{part}'
    return f'case ":${{{name}-}}:" in *:{part}:*) ;; *) export {name}={joined} ;; esac {marker(name)}'


def source_line(env_file: str) -> str:
    p = shell.path(env_file)
    return f"[ -f {p} ] && . {p} {marker('env')}"


class ProfileArgs(Args):
    name: str
    value: str | None = None
    prepend: str | None = None  # a PATH-like variable: put this entry first
    append: str | None = None  # ... or last
    state: Literal["present", "absent"] = "present"
    path: str = ENV_FILE
    source_from: list[str] | str | None = "~/.bashrc"  # where the env file gets sourced; none: nowhere


@action
class Profile(Action):
    name = "profile"
    Args: ClassVar = ProfileArgs

    def targets(self) -> list[str]:
        src = self.args.source_from
        sources = [src] if isinstance(src, str) else list(src or [])
        return [self.args.path, *(s for s in sources if s.strip())]

    def probe(self) -> Probe[list[FileState]]:
        return Probe(f"; echo {_SPLIT}; ".join(file_script(t) for t in self.targets()), self.states)

    def states(self, result: CommandResult) -> list[FileState]:
        """One state per target, in order."""
        outputs = result.stdout.split(_SPLIT)
        if len(outputs) != len(self.targets()):
            raise FleetError(f"profile: the probe printed {len(outputs)} file states for {len(self.targets())} files")
        return [FileState.parse(raw.strip("\n")) for raw in outputs]

    def line(self) -> str | None:
        a = self.args
        if not _NAME.match(a.name):
            raise FleetError(f"profile: {a.name!r} is not an environment variable name")
        given = [x for x in (a.value, a.prepend, a.append) if x is not None]
        if a.state == "absent":
            return None
        if len(given) != 1:
            raise FleetError("profile: give exactly one of `value`, `prepend` or `append`")
        return export_line(a.name, a.value, a.prepend, a.append)

    def plan(self, states: list[FileState], ctx: Context) -> Plan:
        line = self.line()
        targets = self.targets()
        # (file, its line or None to remove it, the marker that finds the line again)
        edits = [(targets[0], line, marker(self.args.name))]
        if line is not None:  # a removed variable leaves the env file sourced
            edits += [(t, source_line(self.args.path), marker("env")) for t in targets[1:]]
        plans = []
        for (target, text, mark), state in zip(edits, states, strict=False):
            if state.kind == "file" and state.content is None:
                return Plan(fail=f"{target} is too large to edit")
            if state.kind == "absent" and text is None:
                continue
            old = (state.content or b"").decode(errors="replace")
            new = edit_lines(old, text, rf"{re.escape(mark)}$", present=text is not None)
            plans.append(plan_content(target, state, new.encode(), None))
        failed = [p.fail for p in plans if p.fail]
        if failed:
            return Plan(fail=failed[0])
        changing = [p for p in plans if p.changes]
        verb = f"export {self.args.name}" if line else f"unset {self.args.name}"
        if not changing:
            return Plan(summary=f"{verb} in {self.args.path} (up to date)")
        return Plan(
            script="".join(p.script or "" for p in changing) or None,
            uploads=tuple(u for p in changing for u in p.uploads),
            summary=f"{verb} in {self.args.path}: " + "; ".join(p.summary for p in changing),
            diff="".join(p.diff or "" for p in changing) or None,
        )
