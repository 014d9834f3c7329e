"""`assert`: conditions over facts and variables, checked without touching the host."""

from __future__ import annotations

from typing import ClassVar

from ..model import CommandResult, FleetError, Plan
from ..task import Action, Args, Context, action
from ..templating import TemplateError, condition


class AssertArgs(Args):
    that: list[str] | str
    msg: str | None = None
    success_msg: str | None = None


@action
class Assert(Action):
    name = "assert"
    Args: ClassVar = AssertArgs
    read_only = True

    def plan(self, observed: CommandResult | None, ctx: Context) -> Plan:
        conditions = [self.args.that] if isinstance(self.args.that, str) else self.args.that
        for that in conditions:
            try:
                holds = condition(that, ctx.vars, "assert")
            except TemplateError as exc:
                raise FleetError(f"assert: {exc}") from None
            if not holds:
                return Plan(fail=self.args.msg or f"assertion failed: {that}")
        return Plan(summary=self.args.success_msg or "all assertions passed")
