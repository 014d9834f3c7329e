"""`fleet train` over the fleet: launch, status, logs and stop, one connection per host and, for
each operation, one batched command per host (a launch: preflight, then one script if needed)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..facts import sections
from ..health import PROBE as HEALTH_PROBE
from ..health import parse_health, turned_sick
from ..inventory import Inventory
from ..model import Plan, RunOptions, RunReport, Status, TaskResult, Unreachable
from ..report import Reporter, print_line, print_table
from ..runner import Session, each_host
from ..sanitize import visible
from .config import TrainConfig, host_setting
from .jobs import (
    PEER_PREFIX,
    STOPPED_BY_USER,
    JobState,
    LaunchOutcome,
    RunPaths,
    StopOutcome,
    follow_script,
    parse_launch,
    parse_preflight,
    parse_state,
    parse_stop,
    preflight_probe,
    state_probe,
    stop_script,
    tail_script,
)
from .plan import job_files, node_specs, plan_launch
from .rendezvous import LEFTOVERS, peers_to_stop

PROBE_TIMEOUT = 60


def run_paths(config: TrainConfig, hostvars: Mapping[str, Any]) -> RunPaths:
    return RunPaths(str(host_setting(hostvars, "train_workdir", config.job.workdir)), config.job.run_name)


@dataclass
class _Recorder:
    """Turns per-host outcomes into TaskResults on a RunReport, shown by a Reporter."""

    report: RunReport
    reporter: Reporter
    session: Session
    task: str

    def result(self, host: str, status: Status, message: str, started: float) -> None:
        redacted = self.session.redactor(host).text(message)
        result = TaskResult(host, self.task, "train", status, redacted, duration=time.monotonic() - started)
        self.report.host(host).results.append(result)
        self.reporter.task_done(result)

    def unreachable(self, host: str, exc: Unreachable) -> None:
        text = self.session.redactor(host).text(str(exc))
        self.report.host(host).unreachable = text
        self.reporter.host_unreachable(host, text)

    def close(self, hosts: list[str], started: float) -> None:
        for host in hosts:
            self.report.host(host).commands = self.session.commands(host)
            self.report.host(host).duration = time.monotonic() - started
        self.reporter.run_done(self.report)


# ---- launch ------------------------------------------------------------------------------------
def launch(
    inventory: Inventory,
    hosts: list[str],
    config: TrainConfig,
    options: RunOptions,
    reporter: Reporter,
    *,
    ignore_health: bool = False,
    mode: str = "new",
) -> RunReport:
    started = time.monotonic()
    report = RunReport()
    with Session(inventory, options) as session:
        rec = _Recorder(report, reporter, session, f"train {config.job.run_name}")
        reporter.redactor = session.redactor()
        hostvars = {h: session.hostvars(h) for h in hosts}
        specs = node_specs(config, hosts, hostvars, launch_id=uuid.uuid4().hex[:12])
        names = list(job_files(config))
        reporter.play_started(f"train {config.job.run_name}", hosts)

        def preflight(host: str, conn: Any) -> Any:
            spec = specs[host]
            script = preflight_probe(spec.paths, spec.argv[0], names, config.job.require_modules)
            return parse_preflight(conn.run(script, timeout=PROBE_TIMEOUT).stdout, names)

        found = each_host(session, hosts, preflight, options.forks)
        plans: dict[str, Plan] = {}
        for host, pre in found.items():
            if isinstance(pre, Unreachable):
                rec.unreachable(host, pre)
            else:
                plans[host] = plan_launch(specs[host], pre, config, hostvars[host], mode, ignore_health=ignore_health)
        if config.job.multi_node:
            plans = _all_or_nothing(plans, unreachable=[h for h in hosts if h not in plans])

        def apply(host: str, conn: Any) -> Any:
            return conn.run(plans[host].script, timeout=PROBE_TIMEOUT + config.job.launch_wait)

        to_start = [h for h in hosts if h in plans and plans[h].script and not plans[h].fail]
        applied = each_host(session, to_start, apply, options.forks)
        failed_nodes = []
        for host in hosts:
            plan = plans.get(host)
            if plan is None:
                continue
            if plan.fail:
                rec.result(host, Status.FAILED, plan.fail, started)
            elif not plan.script:
                rec.result(host, Status.OK, plan.summary, started)
            elif isinstance(applied[host], Unreachable):
                rec.unreachable(host, applied[host])
                failed_nodes.append(host)
            elif not applied[host].ok:
                rec.result(host, Status.FAILED, f"launch failed: {applied[host].brief()}", started)
                failed_nodes.append(host)
            else:
                status, message = _launch_result(plan.summary, parse_launch(applied[host].stdout), config)
                rec.result(host, status, message, started)
                if status is Status.FAILED:
                    failed_nodes.append(host)
        if config.job.multi_node and failed_nodes:
            _stop_peers(session, config, specs, [h for h in to_start if h not in failed_nodes], failed_nodes[0], rec)
        rec.close(hosts, started)
    return report


def _launch_result(summary: str, seen: LaunchOutcome, config: TrainConfig) -> tuple[Status, str]:
    """A job that exited in the watch window is not `started`: failed (with its last words) or done."""
    if seen.exit_code is not None and seen.exit_code != 0:
        lines = "\n".join(f"    {line}" for line in seen.last_words())
        return Status.FAILED, (
            f"the job exited with code {seen.exit_code} within {seen.waited}s of its launch; last log lines:\n{lines}"
        )
    if seen.exit_code == 0:
        return Status.CHANGED, f"{summary}; pid {seen.pid}; it finished within {seen.waited}s"
    if seen.ready:
        return Status.CHANGED, f"{summary}; pid {seen.pid}; first step record after {seen.waited}s"
    if config.job.launch_wait:
        return Status.CHANGED, f"{summary}; pid {seen.pid}; running, no step record yet after {seen.waited}s"
    return Status.CHANGED, f"{summary}; pid {seen.pid}"


def _stop_peers(
    session: Session, config: TrainConfig, specs: Mapping[str, Any], hosts: list[str], failed: str, rec: _Recorder
) -> None:
    """A multi-node launch where a node died at once: its peers would wait at the rendezvous or
    their first collective until a timeout; stop them now, naming the node."""
    reason = f"{PEER_PREFIX}{failed} failed at launch"

    def work(host: str, conn: Any) -> StopOutcome:
        script = stop_script(specs[host].paths, reason, config.job.stop_timeout)
        return parse_stop(conn.run(script, timeout=_stop_limit(config)).stdout)

    for host, outcome in each_host(session, hosts, work, session.options.forks).items():
        if isinstance(outcome, StopOutcome) and not outcome.left:
            rec.result(host, Status.FAILED, f"stopped: {reason}", time.monotonic())
        else:
            rec.result(host, Status.FAILED, f"could not stop after {reason}: {outcome}", time.monotonic())


def _all_or_nothing(plans: dict[str, Plan], unreachable: list[str]) -> dict[str, Plan]:
    """A multi-node run starts on every node or on none: a node missing at rendezvous hangs the rest.
    A resume starts only when every node resumes from the same checkpoint."""
    running = [h for h, p in plans.items() if p.data.get("running")]
    blockers = [h for h, p in plans.items() if p.fail] + unreachable
    if running and len(running) < len(plans) + len(unreachable):
        why = f"the run is already running on {', '.join(running)} but not on every node; stop it first"
        return {h: p if p.data.get("running") else Plan(fail=why) for h, p in plans.items()}
    if blockers and not running:
        why = f"not started: {', '.join(blockers)} cannot join the multi-node run"
        return {h: p if p.fail else Plan(fail=why) for h, p in plans.items()}
    checkpoints = {h: p.data.get("checkpoint") for h, p in plans.items() if p.data.get("mode") == "resume"}
    if len(set(checkpoints.values())) > 1:
        seen = ", ".join(f"{h}: {c}" for h, c in checkpoints.items())
        why = f"not resumed: the nodes' newest checkpoints differ ({seen}); every node must resume from the same step"
        return {h: Plan(fail=why) for h in plans}
    return plans


# ---- status ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostStatus:
    host: str
    state: JobState | None
    unreachable: str | None = None
    action: str | None = None  # what status did about it (stopping a run whose peer failed)
    gpu_health: tuple[str, ...] = ()  # what turned sick on the host's GPUs since the launch


def collect_status(
    inventory: Inventory, hosts: list[str], config: TrainConfig, options: RunOptions
) -> list[HostStatus]:
    """Every host's job state (one command each); then the multi-node rule: nodes whose peer
    failed are stopped and shown as failed."""
    with Session(inventory, options) as session:
        paths = {h: run_paths(config, session.hostvars(h)) for h in hosts}

        def look(host: str, conn: Any) -> JobState:
            out = conn.run(state_probe(paths[host]) + HEALTH_PROBE, timeout=PROBE_TIMEOUT).stdout
            state = parse_state(out)
            sick[host] = tuple(turned_sick(state.meta.get("health") or {}, parse_health(sections(out))))
            return state

        sick: dict[str, tuple[str, ...]] = {}
        found = each_host(session, hosts, look, options.forks)
        states = {h: s for h, s in found.items() if isinstance(s, JobState)}
        to_stop = peers_to_stop(states)

        def stop(host: str, conn: Any) -> StopOutcome:
            result = conn.run(
                stop_script(paths[host], to_stop[host], config.job.stop_timeout), timeout=_stop_limit(config)
            )
            return parse_stop(result.stdout)

        stopped = each_host(session, list(to_stop), stop, options.forks)
        out = []
        for host in hosts:
            state = found[host]
            if isinstance(state, Unreachable):
                out.append(HostStatus(host, None, unreachable=session.redactor(host).text(str(state))))
                continue
            action = None
            outcome = stopped.get(host)
            if isinstance(outcome, StopOutcome) and not outcome.left:
                peer = to_stop[host] != LEFTOVERS
                state = replace(
                    state,
                    state="failed",
                    procs=frozenset(),
                    stopped_reason=to_stop[host] if peer else state.stopped_reason,
                    ended=state.now if peer else state.ended,
                )
                action = f"stopped: {to_stop[host]}" if peer else f"{state.note}; {LEFTOVERS}"
            elif isinstance(outcome, StopOutcome):
                action = f"could not stop ({to_stop[host]}): processes {' '.join(map(str, outcome.left))} survived"
            elif outcome is not None:
                action = f"could not stop ({to_stop[host]}): {session.redactor(host).text(str(outcome))}"
            out.append(HostStatus(host, state, action=action, gpu_health=sick.get(host, ())))
    return out


def _stop_limit(config: TrainConfig) -> int:
    return config.job.stop_timeout + 30


def _runtime(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def gpu_text(state: JobState) -> tuple[str, str | None]:
    """`used/budget MiB` and a warning when the job is near or over its budget."""
    if state.gpu is None:
        return "-", None
    budget = int(state.meta.get("budget_mib") or 0)
    text = f"{state.gpu.peak_mib}/{budget} MiB" + (" (whole GPU)" if state.gpu.whole_gpu else "")
    if budget and state.gpu.peak_mib > budget:
        return text, f"GPU memory {state.gpu.peak_mib} MiB is over the budget of {budget} MiB"
    if budget and state.gpu.peak_mib >= float(state.meta.get("warn_at", 0.9)) * budget:
        return text, f"GPU memory {state.gpu.peak_mib} MiB is near the budget of {budget} MiB"
    return text, None


def status_dict(item: HostStatus) -> dict[str, Any]:
    if item.state is None:
        return {"host": item.host, "state": "unreachable", "note": item.unreachable}
    s = item.state
    warning = gpu_text(s)[1]
    return {
        "host": item.host,
        "state": s.state,
        "exit_code": s.exit_code,
        "step": s.progress.step,
        "max_steps": s.progress.max_steps,
        "loss": s.progress.loss,
        "reward": s.progress.reward,
        "gpu_memory_mib": s.gpu.peak_mib if s.gpu else None,
        "gpu_memory_whole_gpu": s.gpu.whole_gpu if s.gpu else None,
        "gpu_budget_mib": s.meta.get("budget_mib"),
        "gpu_warning": warning,
        "runtime_s": s.runtime,
        "pid": s.pid,
        "node_rank": s.meta.get("node_rank"),
        "nnodes": s.meta.get("nnodes"),
        "note": item.action or s.note,
        "gpu_health": list(item.gpu_health),  # what turned sick on the GPUs since the launch
    }


def show_status(items: list[HostStatus], run: str, *, as_json: bool) -> int:
    if as_json:
        from ..events import EventWriter

        events = EventWriter()
        for item in items:
            events.emit("train_status", **status_dict(item))
    else:
        rows = []
        for item in items:
            d = status_dict(item)
            if item.state is None:
                rows.append((item.host, "unreachable", "", "", "", "", "", d["note"]))
                continue
            step = "-" if d["step"] is None else f"{d['step']}" + (f"/{d['max_steps']}" if d["max_steps"] else "")
            state = d["state"] + (f" ({d['exit_code']})" if d["state"] == "failed" and d["exit_code"] else "")
            rows.append((
                item.host, state, step, _number(d["loss"]), _number(d["reward"]), gpu_text(item.state)[0],
                _runtime(d["runtime_s"]), d["note"],
            ))  # fmt: skip
        columns = ("host", "state", "step", "loss", "reward", "gpu memory", "runtime", "note")
        print_table(rows, columns, title=f"run {run} on {len(items)} host(s)")
        for item in items:
            warning = gpu_text(item.state)[1] if item.state else None
            if warning:
                print_line(f"warning: {item.host}: {warning}", style="yellow")
            for sick in item.gpu_health:
                print_line(f"warning: {item.host}: {sick} (fleet doctor shows the remedy)", style="yellow")
    code = 0
    if any(i.state and i.state.state in ("failed", "lost") for i in items):
        code |= 2
    if any(i.state is None for i in items):
        code |= 4
    return code


# ---- stop --------------------------------------------------------------------------------------
def stop(
    inventory: Inventory, hosts: list[str], config: TrainConfig, options: RunOptions, reporter: Reporter
) -> RunReport:
    started = time.monotonic()
    report = RunReport()
    with Session(inventory, options) as session:
        rec = _Recorder(report, reporter, session, f"stop {config.job.run_name}")
        reporter.play_started(f"stop {config.job.run_name}", hosts)

        def work(host: str, conn: Any) -> Any:
            script = stop_script(run_paths(config, session.hostvars(host)), STOPPED_BY_USER, config.job.stop_timeout)
            return conn.run(script, timeout=_stop_limit(config))

        for host, result in each_host(session, hosts, work, options.forks).items():
            if isinstance(result, Unreachable):
                rec.unreachable(host, result)
                continue
            outcome = parse_stop(result.stdout)
            if not result.ok and not outcome.was_running:
                rec.result(host, Status.FAILED, f"stop failed: {result.brief()}", started)
            elif not outcome.was_running:
                rec.result(host, Status.OK, "not running", started)
            elif outcome.left:
                left = " ".join(map(str, outcome.left))
                rec.result(host, Status.FAILED, f"processes {left} still alive after SIGKILL", started)
            else:
                how = f" ({len(outcome.killed)} needed SIGKILL)" if outcome.killed else ""
                rec.result(host, Status.CHANGED, f"stopped; no process of the job is left{how}", started)
        rec.close(hosts, started)
    return report


# ---- logs --------------------------------------------------------------------------------------
class LogPrinter:
    """Log lines as `host | line` text, or with --json as one `log_line` event each."""

    def __init__(self, width: int, as_json: bool = False, redactor: Any = None) -> None:
        from ..events import EventWriter

        self.width = width
        self.events = EventWriter(redactor=redactor) if as_json else None

    def __call__(self, host: str, text: str) -> None:
        for line in text.splitlines():
            if self.events:
                self.events.emit("log_line", host=host, line=line)
            else:
                sys.stdout.write(f"{host:<{self.width}} | {visible(line)}\n")  # escapes shown, not obeyed
        sys.stdout.flush()


def show_logs(
    inventory: Inventory,
    hosts: list[str],
    config: TrainConfig,
    options: RunOptions,
    *,
    lines: int,
    follow: bool,
    as_json: bool = False,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The last lines of every host's log, prefixed by host; with follow, new lines as they come
    (one poll per host per interval) until no host's job runs any more or Ctrl-C."""
    code = 0
    with Session(inventory, options) as session:
        paths = {h: run_paths(config, session.hostvars(h)) for h in hosts}
        _print_lines = LogPrinter(max(len(h) for h in hosts), as_json, session.redactor())

        def first(host: str, conn: Any) -> tuple[str, int]:
            size = f"stat -c '@@size %s' {paths[host].q('training.log')} 2>/dev/null\n"
            script = tail_script(paths[host], lines) + size
            out = conn.run(script, timeout=PROBE_TIMEOUT).stdout
            body, _, size = out.rpartition("@@size ")
            return (body, int(size)) if size.strip().isdigit() else (out, 0)

        offsets: dict[str, int] = {}
        for host, got in each_host(session, hosts, first, options.forks).items():
            if isinstance(got, Unreachable):
                print(f"{host}: unreachable: {session.redactor(host).show(str(got))}", file=sys.stderr)
                code = 4
                continue
            _print_lines(host, got[0])
            offsets[host] = got[1]
        if not follow:
            return code
        partial = dict.fromkeys(offsets, "")
        idle_polls = 0
        while offsets and idle_polls < 2:  # one more poll after the last job ended drains its tail
            sleep(interval)

            def poll(host: str, conn: Any) -> tuple[int, int, bool, str]:
                out = conn.run(follow_script(paths[host], offsets[host]), timeout=PROBE_TIMEOUT).stdout
                head, _, data = out.partition("\n")
                start, end, running = [*head.split(), "0", "0", "0"][:3]
                return int(start), int(end), running == "1", data

            running_any = False
            for host, got in each_host(session, list(offsets), poll, options.forks).items():
                if isinstance(got, Unreachable):
                    print(f"{host}: unreachable: {session.redactor(host).show(str(got))}", file=sys.stderr)
                    offsets.pop(host)
                    code = 4
                    continue
                start, end, running, data = got
                if start != offsets[host]:  # the log was replaced (a new launch): start over
                    partial[host] = ""
                text = partial[host] + data
                complete, _, rest = text.rpartition("\n")
                partial[host] = rest
                if complete:
                    _print_lines(host, complete)
                offsets[host] = end
                running_any = running_any or running
            idle_polls = 0 if running_any else idle_polls + 1
        for host, rest in partial.items():
            if rest:
                _print_lines(host, rest)
    return code
