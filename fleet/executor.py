"""One host's tasks, in order, over one connection: decide (when/loop), render, probe, plan,
apply, register. An unchanged task costs one remote command; a changed one two."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import shell
from .connection import Connection
from .facts import Facts, gather_facts, with_overrides
from .model import FleetError, HostReport, Plan, RunOptions, Status, TaskResult, Unreachable
from .playbook import Play
from .report import Reporter
from .secrets import MASK, Redactor, hidden_values
from .task import Action, Context, Task, build
from .templating import TemplateError, Variables, as_bool, evaluate, layered, render, render_argument, unsafe


class HostExecutor:
    """Runs plays on one host. Raises nothing for task failures: they become TaskResults."""

    def __init__(
        self,
        host: str,
        hostvars: Mapping[str, Any],
        conn: Connection,
        options: RunOptions,
        report: HostReport,
        reporter: Reporter,
        redactor: Redactor,
    ) -> None:
        self.host = host
        self.hostvars = dict(hostvars)
        self.conn = conn
        self.options = options
        self.report = report
        self.reporter = reporter
        self.redactor = redactor
        self.facts: Facts | None = None
        self.registered: dict[str, Any] = {}

    # ---- variables ---------------------------------------------------------------------------
    def variables(self, play: Play) -> Variables:
        """Lowest precedence first; templates render lazily when used (fleet/templating.py).
        Registered results and facts came from the host: data, never templated."""
        magic = {
            "inventory_hostname": self.host,
            "check_mode": self.options.check,
            "playbook_dir": play.base_dir,
            "facts": unsafe(self.facts.as_dict()) if self.facts else {},
        }
        return layered(
            (play.defaults, True),
            (self.hostvars, True),
            (play.vars, True),
            (self.registered, False),
            (self.options.extra_vars, True),
            (magic, False),
        )

    def flag(self, value: Any, variables: Variables, keyword: str) -> bool:
        """A boolean keyword, which may be a template giving true/false/yes/no."""
        return as_bool(render(value, variables), keyword)

    # ---- play ----------------------------------------------------------------------------------
    def run_play(self, play: Play) -> None:
        """Run a play's tasks; stop this host at its first failure (unless ignored)."""
        try:
            gather = self.flag(play.gather_facts, self.variables(play), "gather_facts")
        except TemplateError as exc:
            raise FleetError(f"{play.source}: host {self.host}: {exc}") from None
        if gather and self.facts is None:
            # `facts_override` (a dry-run/test aid) replaces gathered fields, e.g. a GPU's.
            try:
                self.facts = with_overrides(gather_facts(self.conn), self.hostvars.get("facts_override"))
            except FleetError as exc:
                raise FleetError(f"host {self.host}: {exc}") from None
        for task in play.tasks:
            if not self._selected(task, play):
                continue
            results = self.run_task(task, play)
            if any(r.status is Status.FAILED and not r.ignored for r in results):
                return

    def _selected(self, task: Task, play: Play) -> bool:
        tags = set(task.tags) | set(play.tags)
        if self.options.tags and not (tags & self.options.tags or "always" in tags):
            return False
        return not (self.options.skip_tags and tags & self.options.skip_tags)

    # ---- task ----------------------------------------------------------------------------------
    def run_task(self, task: Task, play: Play) -> list[TaskResult]:
        self.reporter.task_started(self.host, task.title)
        self._raw_data: list[Mapping[str, Any]] = []  # what each result registers, even under no_log
        try:
            variables = self.variables(play)
            task = self._resolved(task, play, variables)
            items = self._loop_items(task, variables)
        except TemplateError as exc:
            return [self._finish(task, Status.FAILED, self._explain(task, exc), 0.0)]
        results = []
        for item in items:
            scope = variables if item is _NO_ITEM else variables.child(item=item)
            shown = None if item is _NO_ITEM else item
            try:
                result = self._run_one(task, play, scope, shown)
            except Unreachable:
                raise
            except Exception as exc:  # odd input or a bug in one task fails that task, not the whole run
                message = f"{task.source}: {type(exc).__name__}: {exc}"
                result = self._finish(task, Status.FAILED, message, 0.0, item=shown)
            results.append(result)
            if result.status is Status.FAILED and not result.ignored:
                break
        if task.register:
            registered = [_registered(r, d) for r, d in zip(results, self._raw_data, strict=True)]
            if items == [_NO_ITEM]:
                self.registered[task.register] = unsafe(registered[0])
            else:
                self.registered[task.register] = unsafe({
                    "results": registered,
                    "changed": any(r.status is Status.CHANGED for r in results),
                    "failed": any(r.status is Status.FAILED for r in results),
                })  # fmt: skip
        return results

    def _resolved(self, task: Task, play: Play, variables: Variables) -> Task:
        """The task with its boolean keywords decided for this host (they may be templates)."""
        flags = {k: self.flag(getattr(task, k), variables, k) for k in ("ignore_errors", "no_log")}
        become = play.become if task.become is None else task.become
        flags["become"] = self.flag(become, variables, "become")
        return replace(task, **flags)

    def _loop_items(self, task: Task, variables: Mapping[str, Any]) -> list[Any]:
        if task.loop is None:
            return [_NO_ITEM]
        items = render(task.loop, variables)
        if isinstance(items, str):
            items = evaluate(items, variables) if items.strip() else []
        if not isinstance(items, list | tuple):
            raise TemplateError(f"loop must give a list, got {type(items).__name__}")
        return list(items)

    def _explain(self, task: Task, exc: Exception) -> str:
        return f"{task.source}: {exc}"

    def _run_one(self, task: Task, play: Play, scope: Variables, item: Any) -> TaskResult:
        started = time.monotonic()
        try:
            if task.when is not None and not evaluate(task.when, scope):
                return self._finish(task, Status.SKIPPED, "condition false", started, item=item)
            args = render_argument(task.args, scope, "arguments")
            env = render_argument({**play.environment, **task.environment}, scope, "environment")
            become_user = render_argument(task.become_user or play.become_user, scope, "become_user")
            action = build(task.action, args)
        except (TemplateError, FleetError) as exc:
            return self._finish(task, Status.FAILED, self._explain(task, exc), started, item=item)
        run_kwargs = {
            "env": env or None,
            "become": task.become,
            "become_user": become_user,
            "timeout": task.timeout or float(scope.get("command_timeout") or 0) or None,
        }
        ctx = Context(self.host, self.facts, scope, self.options.check)
        observed = None
        probe = action.probe()
        if probe is not None:
            observed = self.conn.run(probe, **run_kwargs)
            if observed.timed_out:
                return self._timed_out(task, started, item, run_kwargs["timeout"])
        try:
            plan = action.plan(observed, ctx)
        except FleetError as exc:
            return self._finish(task, Status.FAILED, str(exc), started, item=item)
        if plan.fail:
            return self._judge(task, scope, Status.FAILED, plan.fail, plan, started, item, plan.data)
        if not plan.changes:
            return self._judge(task, scope, Status.OK, plan.summary, plan, started, item, plan.data)
        if self.options.check and not action.read_only:
            status = Status.SKIPPED if plan.always_runs else Status.CHANGED
            message = f"would {plan.summary}" if plan.summary else "would change"
            return self._finish(task, status, message, started, diff=plan.diff, item=item, data=plan.data)
        return self._apply(task, scope, action, plan, ctx, run_kwargs, started, item)

    def _apply(
        self,
        task: Task,
        scope: Mapping[str, Any],
        action: Action,
        plan: Plan,
        ctx: Context,
        run_kwargs: dict[str, Any],
        started: float,
        item: Any,
    ) -> TaskResult:
        script = "".join(shell.write_file(u.path, u.content, u.mode) for u in plan.uploads)
        script += plan.script or ""
        result = self.conn.run(script, **run_kwargs)
        if result.timed_out:
            return self._timed_out(task, started, item, run_kwargs["timeout"])
        data = {**plan.data, **action.applied(plan, result, ctx)}
        if not result.ok:
            message = f"{plan.summary or 'apply'} failed: {result.brief()}"
            return self._judge(task, scope, Status.FAILED, message, plan, started, item, data)
        return self._judge(task, scope, Status.CHANGED, plan.summary, plan, started, item, data)

    def _timed_out(self, task: Task, started: float, item: Any, timeout: Any) -> TaskResult:
        message = f"timed out after {timeout:g}s and was stopped; raise the task's `timeout:` if it needs longer"
        return self._finish(task, Status.FAILED, message, started, item=item)

    def _judge(
        self,
        task: Task,
        scope: Variables,
        status: Status,
        message: str,
        plan: Plan,
        started: float,
        item: Any,
        data: Mapping[str, Any],
    ) -> TaskResult:
        """Apply changed_when / failed_when, which see the task's data as `result` (and by the name
        it registers, as in Ansible)."""
        if task.changed_when is not None or task.failed_when is not None:
            outcome = {**data, "changed": status is Status.CHANGED, "failed": status is Status.FAILED}
            view = scope.child(result=outcome, **({task.register: outcome} if task.register else {}))
            try:
                if task.failed_when is not None:
                    failed = bool(evaluate(task.failed_when, view))
                    if failed and status is not Status.FAILED:
                        status, message = Status.FAILED, f"failed_when is true: {task.failed_when}"
                    elif not failed and status is Status.FAILED:
                        status, message = (Status.CHANGED if plan.changes else Status.OK), plan.summary
                if task.changed_when is not None and status is not Status.FAILED:
                    status = Status.CHANGED if evaluate(task.changed_when, view) else Status.OK
            except TemplateError as exc:
                status, message = Status.FAILED, self._explain(task, exc)
        return self._finish(task, status, message, started, diff=plan.diff, item=item, data=data)

    def _finish(
        self,
        task: Task,
        status: Status,
        message: str,
        started: float,
        *,
        diff: str | None = None,
        item: Any = None,
        data: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        data = dict(data or {})
        self._raw_data.append(data)  # registered in full: a later task may need it
        if task.no_log:
            # Hidden here, and whatever it printed counts as secret wherever a later task shows it.
            self.redactor.add(hidden_values(data))
            message, diff, data = ("output hidden (no_log)" if message else ""), None, {}
            item = None if item is None else MASK
        ignored = status is Status.FAILED and task.ignore_errors
        result = TaskResult(
            host=self.host,
            task=task.title,
            action=task.action,
            status=status,
            message=self.redactor.show(message),
            diff=self.redactor.show(diff) if diff and (self.options.diff or self.options.check) else None,
            duration=time.monotonic() - started if started else 0.0,
            item=self.redactor.show(item),
            data=data,
            ignored=ignored,
        )
        self.report.results.append(result)
        self.reporter.task_done(result)
        return result


_NO_ITEM = object()


def _registered(result: TaskResult, data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "status": str(result.status),
        "changed": result.status is Status.CHANGED,
        "failed": result.status is Status.FAILED,
        "skipped": result.status is Status.SKIPPED,
        "msg": result.message,
        **({"item": result.item} if result.item is not None else {}),
    }
