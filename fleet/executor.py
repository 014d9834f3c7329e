"""One host's tasks, in order, over one connection: decide (when/loop), render, probe, plan,
apply, register.

Probes are batched: when a task needs its probe, the probes of the tasks after it that can
already be rendered (and the facts, before the first task) go in the same request, and their
observations are kept until something changes the host. So a converged play costs one round trip
per host, and a play with k changes about 2k+2 (2k+1, and one look again under the host lock). The
batch is only a cache of observations keyed by the exact probe script and its settings: every task
is still decided, rendered and planned at its own turn with the real variables, and uses a kept
observation only when its probe is the same, so batched and unbatched runs give identical results
(tests/test_batched_probes.py).

What ends a batch: a task whose `when:`, `loop:`, args or environment need something not known
yet (an earlier task's registered result, or the facts while they are being gathered); a task
that will run something without a probe (a command with no `creates`/`removes`, also with
`changed_when: false`: it may write, so it runs at its turn like any change and the probes after
it are sent again); a task that runs as another user (`become`); after the play's first change,
the next task that the observations taken before that change say will change too (its probe is
the batch's last, and when it is the task asking, the batch is its probe alone: on a first run,
where every task changes, the probes after it would only see the host before its change);
MAX_PROBES probes. Probes with
different environments share a batch (each exports its own in its subshell); a batch runs under
the shortest time limit of its probes, and a probe it could not answer in time runs again alone
under its own limit, as unbatched.

The first look and the host lock: a play's first request (the facts and the first batch) only
observes, so it goes over one plain exec channel (fleet.connection), starts no python3 agent on the
host and takes no host lock; a converged play ends there. Every later request goes through the
agent. Probes take no host lock; what changes the host does (the agent takes it with the request).
A task that must change the host from what was observed without the lock looks again first: its
probe alone (the probes after it are sent again after its change anyway), one request through the
agent that takes the lock, and the task is planned anew from that, so a change another run made in
between is seen before anything is applied. A result registered from a look without the lock is
looked at again under it before the first change (another task may act on it): when it no longer
gives what was registered, that change fails and says so, nothing applied. (Facts are not gathered
again: they stay cached for the run, so a `when:` on a fact another run changes meanwhile is not
caught.)"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .batch import MAX_PROBES, Batch, ProbeCall
from .connection import Connection, TransferFailed
from .facts import Facts, PartialFacts, facts_probe, facts_timeout, facts_view, merged, with_overrides
from .factuse import ALL_GROUPS, FIELD_GROUPS, groups_named, play_groups, strings, template_parts
from .model import CommandResult, FleetError, HostReport, Plan, RunOptions, Status, TaskResult, Unreachable
from .playbook import Play
from .probe import as_probe, observe
from .report import Reporter
from .secrets import MASK, Redactor, hidden_values
from .task import Action, Context, Task, build
from .templating import (
    TemplateError,
    Variables,
    Watch,
    as_bool,
    condition,
    evaluate,
    layered,
    render,
    render_argument,
    unsafe,
)


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
        # Observations taken since the host last changed, in the order they were probed, each
        # with whether it was taken without the host lock.
        self._kept: list[tuple[ProbeCall, CommandResult, bool]] = []
        self._first_look = True  # the play's first request: it only observes (no agent, no lock)
        self._seen_unlocked = False  # whether the observation _probe returned last was taken unlocked
        # Registered observations taken without the host lock, not yet confirmed under it: a later
        # task may act on them, so the first change looks at them again (_stale_registered).
        self._registered_unlocked: list[_Unconfirmed] = []
        self._alone: set[ProbeCall] = set()  # calls a batch could not answer: they run on their own
        # What each probe call answered before the play's first change: after a change, a batch
        # ends at the next task that this says will change too (see _expects_change).
        self._before: dict[ProbeCall, CommandResult] = {}
        self._changed = False  # whether this play changed the host yet
        self._play: Play | None = None
        self._cursor = (0, 0)  # (task index, item index) of the task running now
        # What looking ahead prepared (the task decided, its item, its action and run settings, or
        # None when `when:` was false) for a (task index, item index), from no value unknown then:
        # the same task with the same item takes it at its turn instead of rendering it all again.
        self._prepared: dict[tuple[int, int], tuple[Task, Any, tuple[Action, dict[str, Any]] | None]] = {}
        self._facts_pending = False  # gathering them now: looking ahead must not use them
        self._facts_groups: frozenset[str] = frozenset()  # the fact groups gathered (fleet/factuse.py)
        # The groups this host's own variables name (a template in the inventory or -e may use facts).
        self._host_groups = groups_named(template_parts(strings([self.hostvars, options.extra_vars])))
        self._facts_call: ProbeCall | None = None  # the facts probe being gathered now
        self._facts_seen: Facts | None = None
        self._facts_dict: Any = {}

    # ---- variables ---------------------------------------------------------------------------
    def variables(self, play: Play, unknown: Mapping[str, Any] | None = None, watch: Watch | None = None) -> Variables:
        """Lowest precedence first; templates render lazily when used (fleet/templating.py).
        Registered results and facts came from the host: data, never templated. `unknown` (only
        when looking ahead for a batch) replaces values not known yet with ones that fail when used;
        `watch` notes whether any was read."""
        magic = {
            "inventory_hostname": self.host,
            "check_mode": self.options.check,
            "playbook_dir": play.base_dir,
            "facts": self._facts_view(),
        }
        return layered(
            (play.defaults, True),
            (self.hostvars, True),
            (play.vars, True),
            (self.registered, False),
            (self.options.extra_vars, True),
            (magic, False),
            (unknown or {}, False),
            watch=watch,
        )

    def _facts_view(self) -> Any:
        """The facts as templates see them, built once per facts object (asdict is not cheap, and
        every task and every look ahead asks for them)."""
        if self.facts is None:
            return {}
        if self._facts_seen is not self.facts:
            self._facts_seen, self._facts_dict = self.facts, facts_view(self.facts, self._facts_groups)
        return self._facts_dict

    def _ctx_facts(self) -> Any:
        """The facts as an action sees them: a field of a group not gathered fails where it is read."""
        if self.facts is None or self._facts_groups >= ALL_GROUPS:
            return self.facts
        return PartialFacts(self.facts, self._facts_groups)

    def _gather(self, play: Play) -> None:
        """Gather the fact groups this play names that no play before it gathered: in the play's
        first request, with the first probe batch. `facts_override` (a dry-run/test aid) replaces
        gathered fields, e.g. a GPU's, and counts as gathered."""
        missing = (play_groups(play) | self._host_groups) - self._facts_groups
        if not missing:
            return
        probe = facts_probe(missing)
        self._facts_call = ProbeCall(probe.script, timeout=facts_timeout(missing), inline=probe.inline)
        self._facts_pending = True
        overrides = self.hostvars.get("facts_override")
        try:
            gathered = observe(probe, self._probe(self._facts_call))
            facts = gathered if self.facts is None else merged(self.facts, gathered, missing)
            self.facts = with_overrides(facts, overrides)
        except FleetError as exc:
            raise FleetError(f"host {self.host}: {exc}") from None
        given = {FIELD_GROUPS[str(k)] for k in overrides} if isinstance(overrides, Mapping) else set()
        self._facts_groups |= missing | given
        self._facts_pending = False

    def flag(self, value: Any, variables: Variables, keyword: str) -> bool:
        """A boolean keyword, which may be a template giving true/false/yes/no."""
        return as_bool(render(value, variables), keyword)

    # ---- play ----------------------------------------------------------------------------------
    def run_play(self, play: Play) -> None:
        """Run a play's tasks; stop this host at its first failure (unless ignored)."""
        self._play, self._cursor, self._kept, self._first_look = play, (0, 0), [], True
        self._prepared = {}
        self._before, self._changed = {}, False
        try:
            gather = self.flag(play.gather_facts, self.variables(play), "gather_facts")
        except TemplateError as exc:
            raise FleetError(f"{play.source}: host {self.host}: {exc}") from None
        if gather:
            self._gather(play)
        for index, task in enumerate(play.tasks):
            if not self._selected(task, play):
                continue
            self._cursor = (index, 0)
            results = self.run_task(task, play)
            if any(r.status is Status.FAILED and not r.ignored for r in results):
                return

    def _selected(self, task: Task, play: Play) -> bool:
        tags = set(task.tags) | set(play.tags)
        if self.options.tags and not (tags & self.options.tags or "always" in tags):
            return False
        return not (self.options.skip_tags and tags & self.options.skip_tags)

    # ---- task ----------------------------------------------------------------------------------
    _holding = False  # while retrying, results are not reported until the last attempt

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
        if task.register:  # what this task registers replaces what an earlier one did
            self._registered_unlocked = [u for u in self._registered_unlocked if u.name != task.register]
        for number, item in enumerate(items):
            self._cursor = (self._cursor[0], number)
            scope = variables if item is _NO_ITEM else variables.child(item=item)
            shown = None if item is _NO_ITEM else item
            result = self._attempts(task, play, scope, shown) if task.retries is not None or task.until else None
            result = result or self._run_guarded(task, play, scope, shown)
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
        if "become" in variables:  # ansible_become/become in the inventory: variables beat keywords, as in Ansible
            become = variables["become"]
        flags["become"] = self.flag(become, variables, "become")
        if "become_user" in variables:
            flags["become_user"] = variables["become_user"]
        return task.decided(**flags)

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

    def _prepare(self, task: Task, play: Play, scope: Variables) -> tuple[Action, dict[str, Any]] | None:
        """The task's action and run settings for one item, or None when `when:` is false. The
        same code decides a task at its turn and when looking ahead for a batch."""
        if task.when is not None and not condition(task.when, scope):
            return None
        args = render_argument(task.args, scope, "arguments")
        env = render_argument({**play.environment, **task.environment}, scope, "environment")
        become_user = render_argument(task.become_user or play.become_user, scope, "become_user")
        action = build(task.action, args)
        run_kwargs = {
            "env": env or None,
            "become": task.become,
            "become_user": become_user,
            "timeout": task.timeout or float(scope.get("command_timeout") or 0) or None,
        }
        return action, run_kwargs

    def _run_guarded(self, task: Task, play: Play, scope: Any, item: Any) -> TaskResult:
        try:
            return self._run_one(task, play, scope, item)
        except Unreachable:
            raise
        except Exception as exc:  # odd input or a bug in one task fails that task, not the whole run
            return self._finish(task, Status.FAILED, f"{task.source}: {type(exc).__name__}: {exc}", 0.0, item=item)

    def _attempts(self, task: Task, play: Play, scope: Variables, item: Any) -> TaskResult:
        """`retries`/`until`/`delay`: run the task again, `delay` seconds apart, until `until` is
        true (without `until`: until it does not fail), at most retries + 1 times (Ansible's count).
        Only the last attempt is reported; it registers `attempts`."""
        attempts = (3 if task.retries is None else task.retries) + 1
        self._holding = True  # _finish keeps the attempts to itself
        try:
            for attempt in range(1, attempts + 1):
                result = self._run_guarded(task, play, scope, item)
                data = self._raw_data[-1]
                data["attempts"] = attempt
                outcome = _registered(result, data)
                try:
                    view = scope.child(result=outcome, **({task.register: outcome} if task.register else {}))
                    done = condition(task.until, view, "until") if task.until else result.status is not Status.FAILED
                except TemplateError as exc:
                    result, done = replace(result, status=Status.FAILED, message=self._explain(task, exc)), True
                if done or attempt == attempts:
                    break
                self._raw_data.pop()
                self._kept = []  # probes batched before the wait may be stale: the next attempt looks again
                time.sleep(task.delay)
        finally:
            self._holding = False
        if not done and result.status is not Status.FAILED:
            message = f"`until: {task.until}` still false after {attempt} attempt(s)"
            result = replace(result, status=Status.FAILED, message=message, ignored=task.ignore_errors)
        result = replace(result, data={**result.data, "attempts": attempt})
        self.report.results.append(result)
        self.reporter.task_done(result)
        return result

    def _run_one(self, task: Task, play: Play, scope: Mapping[str, Any], item: Any) -> TaskResult:
        started = time.monotonic()
        try:
            seen = self._prepared.pop(self._cursor, None)
            fresh = seen is None or seen[:2] != (task, item)
            prepared = self._prepare(task, play, scope) if fresh else seen[2]
        except (TemplateError, FleetError) as exc:
            return self._finish(task, Status.FAILED, self._explain(task, exc), started, item=item)
        if prepared is None:
            return self._finish(task, Status.SKIPPED, "condition false", started, item=item)
        action, run_kwargs = prepared
        ctx = Context(self.host, self._ctx_facts(), scope, self.options.check)
        probe = as_probe(action.probe())
        for look in ("first", "under the lock"):
            observed, unlocked = None, False
            try:
                if probe is not None:
                    call = ProbeCall.of(probe.script, run_kwargs, probe.path, probe.inline)
                    # Under the lock the look is again to change the host, which sends the
                    # probes after it again anyway; after a change, one expected to change too.
                    alone = look != "first" or (self._changed and self._expects_change(action, probe, call, scope))
                    result = self._probe(call, locked=look != "first", alone=alone)
                    if result.timed_out:
                        return self._timed_out(task, started, item, run_kwargs["timeout"])
                    observed, unlocked = observe(probe, result), self._seen_unlocked
                plan = action.plan(observed, ctx)
                if unlocked and task.register:  # a retry's attempt replaces the one before
                    noted = _Unconfirmed(task.register, call, probe, action, ctx, plan)
                    unconfirmed = self._registered_unlocked
                    self._registered_unlocked = [u for u in unconfirmed if (u.name, u.call) != (noted.name, call)]
                    self._registered_unlocked.append(noted)
            except FleetError as exc:  # also a probe that failed (ProbeFailed)
                return self._finish(task, Status.FAILED, str(exc), started, item=item)
            if plan.fail:
                return self._judge(task, scope, Status.FAILED, plan.fail, plan, started, item, plan.data)
            if not plan.changes:
                return self._judge(task, scope, Status.OK, plan.summary, plan, started, item, plan.data)
            if self.options.check and not action.read_only:
                status = Status.SKIPPED if plan.always_runs else Status.CHANGED
                message = f"would {plan.summary}" if plan.summary else "would change"
                return self._finish(task, status, message, started, diff=plan.diff, item=item, data=plan.data)
            if not unlocked or action.read_only or look != "first":
                break
            # Seen without the host lock: another run may have changed the host since. Look again
            # under the lock (this task's probe and those after it, one request) and plan anew.
            self._kept = []
            if task.register:
                self._registered_unlocked.remove(noted)
        if (stale := self._stale_registered()) is not None:
            message = (
                f"not applied: `{stale}` was registered from a look without the host lock and the host "
                "no longer gives the same (another run changed it meanwhile?); run again"
            )
            return self._finish(task, Status.FAILED, message, started, item=item)
        return self._apply(task, scope, action, plan, ctx, run_kwargs, started, item)

    def _stale_registered(self) -> str | None:
        """Before a change: the registered observations taken without the host lock, looked at
        again under it (it is held from then on); the name of the first that no longer holds. That
        one stays unconfirmed, so every later change fails too (the failure may be ignored), until
        a task registers the name anew."""
        pending = self._registered_unlocked
        for index, seen in enumerate(pending):
            now = self._request(seen.call.script, seen.call.run_kwargs(), locked=True)
            if not seen.holds(now):
                self._registered_unlocked = pending[index:]
                return seen.name
        self._registered_unlocked = []
        return None

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
        self._kept.clear()  # the host changes: what was observed before may no longer hold
        self._changed = True
        self._first_look = False  # what comes after a change goes through the agent, under the lock
        as_user = {"become": run_kwargs["become"], "become_user": run_kwargs["become_user"]}
        for upload in plan.uploads:  # streamed by the connection, each written atomically
            try:
                self.conn.put(upload.source or upload.content, upload.path, upload.mode, **as_user)
            except TransferFailed as exc:
                message = f"{plan.summary or 'upload'} failed: {exc}"
                return self._judge(task, scope, Status.FAILED, message, plan, started, item, plan.data)
        result = self.conn.run(plan.script, **run_kwargs) if plan.script else CommandResult("", "", 0)
        if result.timed_out:
            return self._timed_out(task, started, item, run_kwargs["timeout"])
        data = {**plan.data, **action.applied(plan, result, ctx)}
        if not result.ok:
            message = f"{plan.summary or 'apply'} failed: {result.brief()}"
            return self._judge(task, scope, Status.FAILED, message, plan, started, item, data)
        said = action.verdict(plan, result, ctx)
        if said is not None:
            status = Status.FAILED if said[0] else Status.CHANGED
            return self._judge(task, scope, status, said[1], plan, started, item, data)
        return self._judge(task, scope, Status.CHANGED, plan.summary, plan, started, item, data)

    # ---- probes, batched -------------------------------------------------------------------------
    def _probe(self, call: ProbeCall, *, locked: bool = False, alone: bool = False) -> CommandResult:
        """The result of a probe call: kept from a batch sent since the host last changed, else
        from a new batch that also carries the probes of the tasks after this one (`locked`: a new
        batch, taken under the host lock; `alone`: this task is expected to change the host, so
        the probes after it would only see the host before that change, and wait)."""
        if self.options.batch_probes and call not in self._alone:
            if (kept := self._take(call)) is not None:
                return kept
            batch = Batch.of([call, *([] if alone else self._lookahead(call))])
            if len(batch.calls) > 1:
                result = self._request(batch.script(), batch.run_kwargs(), locked)
                answered = list(zip(batch.calls, batch.split(result), strict=True))
                self._kept = [(c, r, self._seen_unlocked) for c, r in answered if r is not None]
                self._alone.update(c for c, r in answered if r is None)  # each runs alone, as unbatched
                if not self._changed:
                    self._before.update((c, r) for c, r, _ in self._kept)
                if (kept := self._take(call)) is not None:
                    return kept
        return self._request(call.script, call.run_kwargs(), locked)

    def _request(self, script: str, run_kwargs: Mapping[str, Any], locked: bool) -> CommandResult:
        """Send probes: without the host lock unless `locked`; the play's first request over a
        plain exec channel (no agent), every later one through the agent."""
        first, self._first_look = self._first_look, False
        result = self.conn.run(script, **run_kwargs, observe_only=not locked, plain=first and not locked)
        self._seen_unlocked = not self.conn.locked()
        return result

    def _take(self, call: ProbeCall) -> CommandResult | None:
        for index, (kept_call, result, unlocked) in enumerate(self._kept):
            if kept_call == call:
                del self._kept[: index + 1]  # what came before was for tasks that did not need it
                self._seen_unlocked = unlocked
                return result
        return None

    def _lookahead(self, first: ProbeCall) -> list[ProbeCall]:
        """The probe calls of the tasks after the cursor, rendered with what is known now, up to
        the first task that cannot be rendered yet or will change the host. A guess that turns
        out wrong costs only a probe: each task compares its own call at its turn."""
        play = self._play
        if play is None:
            return []
        unknown: dict[str, Any] = {}
        if self._facts_pending:
            unknown["facts"] = _unknown("facts")
        calls: list[ProbeCall] = []
        task_index, item_index = self._cursor
        skip_items = item_index + 1
        if first == self._facts_call and self._facts_pending:  # gathering facts: start at the first task
            task_index, skip_items = 0, 0
        try:
            for index, task in enumerate(play.tasks[task_index:], start=task_index):
                if not self._selected(task, play):
                    continue
                watch = Watch(unknown)
                variables = self.variables(play, unknown, watch)
                task = self._resolved(task, play, variables)
                for number, item in list(enumerate(self._loop_items(task, variables)))[skip_items:]:
                    scope = variables if item is _NO_ITEM else variables.child(item=item)
                    prepared = self._prepare(task, play, scope)
                    if not watch.read:
                        self._prepared[(index, number)] = (task, None if item is _NO_ITEM else item, prepared)
                    if prepared is None:
                        continue
                    action, run_kwargs = prepared
                    probe = as_probe(action.probe())
                    if probe is None:
                        if action.read_only:
                            continue
                        return calls  # it will run something: the probes after it must wait
                    call = ProbeCall.of(probe.script, run_kwargs, probe.path, probe.inline)
                    if call.user != first.user or len(calls) + 2 > MAX_PROBES:
                        return calls
                    calls.append(call)
                    if self._changed and self._expects_change(action, probe, call, scope):
                        return calls  # the probes after it would see the host before its change
                skip_items = 0
                if task.register:
                    unknown[task.register] = _unknown(task.register)
        except Exception:  # not renderable yet: the batch ends here, the task decides at its turn
            return calls
        return calls

    def _expects_change(self, action: Action, probe: Any, call: ProbeCall, scope: Mapping[str, Any]) -> bool:
        """Whether what `call` answered before the play's first change plans a change: on a first
        run every task changes, and each batch sent after a change would otherwise observe every
        later task again for nothing (on 50 hosts sharing two cores, that host work was most of a
        first run). Only a guess: the task still plans from a fresh observation at its turn."""
        seen = self._before.get(call)
        if seen is None or action.read_only:
            return False
        try:
            ctx = Context(self.host, self._ctx_facts(), scope, self.options.check)
            return bool(action.plan(observe(probe, seen), ctx).changes)
        except Exception:  # a probe that failed, a plan that cannot be made yet: no guess
            return False

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
                    failed = condition(task.failed_when, view, "failed_when")
                    if failed and status is not Status.FAILED:
                        status, message = Status.FAILED, f"failed_when is true: {task.failed_when}"
                    elif not failed and status is Status.FAILED:
                        status, message = (Status.CHANGED if plan.changes else Status.OK), plan.summary
                if task.changed_when is not None and status is not Status.FAILED:
                    status = Status.CHANGED if condition(task.changed_when, view, "changed_when") else Status.OK
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
            hidden=task.no_log,
        )
        if not self._holding:
            self.report.results.append(result)
            self.reporter.task_done(result)
        return result


_NO_ITEM = object()


def _unknown(name: str) -> Any:
    """A value not known while looking ahead: any use of it fails, which ends the batch."""
    import jinja2

    return jinja2.StrictUndefined(name=name)


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


@dataclass(frozen=True)
class _Unconfirmed:
    """A task's result registered as `name` from a look without the host lock: its probe call and
    how it was planned, to tell whether a look under the lock still gives what was registered."""

    name: str
    call: ProbeCall
    probe: Any
    action: Action
    ctx: Context
    plan: Plan

    def holds(self, result: CommandResult) -> bool:
        """Whether `result`, seen now, gives the same registered data and outcome (not the same
        bytes: a probe may print what changes by itself, such as a time)."""
        if result.timed_out:
            return False
        try:
            now = self.action.plan(observe(self.probe, result), self.ctx)
        except FleetError:
            return False
        return (now.fail, bool(now.changes), now.data) == (self.plan.fail, bool(self.plan.changes), self.plan.data)
