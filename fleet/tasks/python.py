"""`python`: a check that runs a snippet in a venv's Python and fails with the snippet's own message
(`import torch` failing says "ModuleNotFoundError: No module named 'torch'").

The snippet is the probe, so a passing check costs one command. In --check mode a failing snippet
is reported as skipped, with its failure, since the tasks before it would change the host first."""

from __future__ import annotations

from typing import ClassVar

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action, output_data
from .uv import venv_python

_RC = "@@fleet-snippet-exit"


def snippet_result(result: CommandResult) -> CommandResult:
    """The snippet's own stdout, stderr and exit status, from the probe's output."""
    stdout, found, rc = result.stdout.rpartition(f"\n{_RC} ")
    if not found or not rc.strip().isdigit():
        raise FleetError("python: the check's probe printed no exit status")
    return CommandResult(stdout, result.stderr, int(rc))


class PythonArgs(Args):
    venv: str
    code: str
    msg: str | None = None  # said before the snippet's own message when it fails


@action
class PythonCheck(Action):
    name = "python"
    Args: ClassVar = PythonArgs

    def snippet(self) -> str:
        py = venv_python(self.args.venv)
        missing = shell.quote(f"no Python at {self.args.venv.rstrip('/')}/bin/python3; create the venv first")
        return f"if [ -x {py} ]; then {py} -c {shell.quote(self.args.code)}; else echo {missing} >&2; exit 127; fi"

    def probe(self) -> Probe[CommandResult]:
        """The snippet, whose exit status is what it observed: printed last, so that the probe
        itself exits 0 whenever it could run (a refused sudo still fails the probe)."""
        return Probe(f"( {self.snippet()}\n); printf '\\n{_RC} %s\\n' \"$?\"", snippet_result)

    def plan(self, result: CommandResult, ctx: Context) -> Plan:
        data = output_data(result)
        if result.ok:
            lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
            return Plan(summary=lines[-1] if lines else "passed", data=data)
        reason = result.brief()
        if ctx.check:
            return Plan(
                script=self.snippet() + "\n",
                summary=f"check after the changes above (fails now: {reason})",
                always_runs=True,
                data=data,
            )
        return Plan(fail=f"{self.args.msg}: {reason}" if self.args.msg else reason, data=data)
