"""`fleet train` over the fleet: launch, status and stop as plays of the playbook engine (the
actions in actions.py), logs as a bounded poll. What each host's result says is view.py's.

A launch is one play (per host: facts and preflight in one command, then the launch script when
the host needs one). A multi-node launch is three: the preflight of every node, then, only when
every node passed (the barrier, plan.launch_barrier), the launch, then the stop of the nodes that
started when another died at once. Status is a read-only play, then the stop of the nodes whose
peer failed (rendezvous.peers_to_stop)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..facts import Facts
from ..inventory import Inventory
from ..model import RunOptions, RunReport, Status, TaskResult, Unreachable
from ..playbook import Play, Playbook
from ..report import Reporter
from ..runner import Session, each_host, run_playbook
from ..task import Task
from .actions import HOST, LaunchOrder, RunOrder
from .config import TrainConfig, host_setting, load_config
from .jobs import PEER_PREFIX, STOPPED_BY_USER, RunPaths, attention_check, follow_script, tail_script
from .plan import launch_barrier, node_specs, requested_attention
from .rendezvous import LEFTOVERS, peers_to_stop
from .view import HostStatus, LogPrinter, attention_text

PROBE_TIMEOUT = 60
ATTENTION_TIMEOUT = 120  # the launch script asks train_grpo.py what attention it will use (imports torch)
PREFLIGHT = "preflight"
IMPORTS = "imports"
LAUNCH = "launch"
STATUS = "status"
STOP_REASON = "train_stop_reason"  # the play variable a gate gives each node it stops


def run_paths(config: TrainConfig, hostvars: Mapping[str, Any]) -> RunPaths:
    return RunPaths(str(host_setting(hostvars, "train_workdir", config.job.workdir)), config.job.run_name)


def _hostvars(inventory: Inventory, hosts: Sequence[str], options: RunOptions) -> dict[str, dict[str, Any]]:
    return {h: {**inventory.host(h).vars, **options.extra_vars} for h in hosts}


def _results(report: RunReport, task: str) -> dict[str, TaskResult]:
    """Each host's (last) result of the task of this name."""
    return {h: r for h, host in report.hosts.items() for r in host.results if r.task == task}


def _stop_task(order: RunOrder, *, peer: bool, reason: str | None = None) -> Task:
    args = {"order": order, "host": HOST, "reason": reason or f"{{{{ {STOP_REASON} }}}}", "peer": peer}
    return Task("train_stop", args, name="stop peers" if peer else "stop", timeout=order.config.job.stop_timeout + 30)


def _play(name: str, hosts: Sequence[str], *tasks: Task, **kw: Any) -> Play:
    return Play(hosts=",".join(hosts), tasks=tasks, name=name, **kw)


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
    run = config.job.run_name
    hostvars = _hostvars(inventory, hosts, options)
    specs = node_specs(config, hosts, hostvars, launch_id=uuid.uuid4().hex[:12])
    order = LaunchOrder(config, specs, mode, ignore_health)
    timeout = PROBE_TIMEOUT + config.job.launch_wait + (ATTENTION_TIMEOUT if config.runs_train_grpo else 0)
    start = Task("train_launch", {"order": order, "host": HOST}, name=LAUNCH, timeout=timeout)
    imports = Task("train_imports", {"order": order, "host": HOST}, name=IMPORTS, timeout=PROBE_TIMEOUT)
    if not config.job.multi_node:
        plays: tuple[Play, ...] = (_play(f"train {run}", hosts, imports, start),)
    else:
        paths = {h: spec.paths for h, spec in specs.items()}
        check = Task("train_preflight", {"order": order, "host": HOST}, name=PREFLIGHT, timeout=PROBE_TIMEOUT)
        plays = (
            _play(f"train {run}: preflight of every node", hosts, imports, check),
            _play(f"train {run}: launch", hosts, start, gate=_barrier(hosts)),
            _play(f"train {run}: stop the peers of a node that died", hosts,
                  _stop_task(RunOrder(config, paths), peer=True), gate=_launch_peers, gather_facts=False),
        )  # fmt: skip
    return run_playbook(Playbook(str(config.path), plays), inventory, options, reporter, command="train")


def _barrier(nodes: list[str]) -> Callable[[RunReport, list[str]], dict[str, Any]]:
    """The launch play's gate: every node's preflight passed, or no node launches."""

    def gate(report: RunReport, hosts: list[str]) -> dict[str, Any]:
        found = _results(report, PREFLIGHT)
        seen: dict[str, Mapping[str, Any] | str] = {}
        for host in nodes:
            why = report.hosts[host].why if host in report.hosts else None
            if why:
                seen[host] = why
            elif host in found:
                seen[host] = dict(found[host].data)
        verdicts = launch_barrier(nodes, seen)
        return {h: ({} if verdicts.get(h) is None else verdicts[h]) for h in hosts}

    return gate


def _launch_peers(report: RunReport, hosts: list[str]) -> dict[str, Any]:
    """The nodes that started while another died at once: stop them (they would wait at the
    rendezvous or at their first collective until a timeout), naming the node."""
    launched = _results(report, LAUNCH)
    dead = [h for h, r in launched.items() if r.status is Status.FAILED]
    dead += [h for h, host in report.hosts.items() if host.unreachable and h not in dead]
    if not dead:
        return {}
    reason = f"{PEER_PREFIX}{dead[0]} failed at launch"
    return {h: {STOP_REASON: reason} for h in hosts if h in launched and launched[h].status is Status.CHANGED}


# ---- status ------------------------------------------------------------------------------------
def collect_status(
    inventory: Inventory, hosts: list[str], config: TrainConfig, options: RunOptions
) -> list[HostStatus]:
    """Every host's job state and GPU health (one command each); then the multi-node rule: nodes
    whose peer failed are stopped and shown as failed. Read-only runs leave no run log."""
    hostvars = _hostvars(inventory, hosts, options)
    order = RunOrder(config, {h: run_paths(config, hostvars[h]) for h in hosts})
    look = Task("train_status", {"order": order, "host": HOST}, name=STATUS, timeout=PROBE_TIMEOUT)
    plays = (
        _play(f"status {config.job.run_name}", hosts, look),
        _play("stop the peers of a failed node", hosts, _stop_task(order, peer=True), gate=_status_peers,
              gather_facts=False),
    )  # fmt: skip
    quiet = replace(options, no_lock=True)  # a look must not wait for a launch's host lock
    report = run_playbook(
        Playbook(str(config.path), plays), inventory, quiet, Reporter(), command="train status", keep_log=False
    )
    if report.interrupted:
        raise KeyboardInterrupt  # Ctrl-C: the CLI's exit 130, no half table
    states = {h: r.data["job"] for h, r in _results(report, STATUS).items() if "job" in r.data}
    stops = _results(report, "stop peers")
    to_stop = peers_to_stop(states)
    out = []
    for host in hosts:
        host_report = report.hosts.get(host)
        if host not in states:
            why = (host_report.unreachable or host_report.why) if host_report else None
            out.append(HostStatus(host, None, unreachable=why or "no answer"))
            continue
        state, action = states[host], None
        stopped = stops.get(host)
        if stopped is not None and "left" in stopped.data and not stopped.data["left"]:
            peer = to_stop[host] != LEFTOVERS
            state = replace(
                state,
                state="failed",
                procs=frozenset(),
                stopped_reason=to_stop[host] if peer else state.stopped_reason,
                ended=state.now if peer else state.ended,
            )
            action = f"stopped: {to_stop[host]}" if peer else f"{state.note}; {LEFTOVERS}"
        elif stopped is not None and stopped.status is Status.FAILED:
            action = f"could not stop ({to_stop.get(host)}): {stopped.message}"
        gpu_health = tuple(_results(report, STATUS)[host].data.get("gpu_health", ()))
        out.append(HostStatus(host, state, action=action, gpu_health=gpu_health))
    return out


def _status_peers(report: RunReport, hosts: list[str]) -> dict[str, Any]:
    states = {h: r.data["job"] for h, r in _results(report, STATUS).items() if "job" in r.data}
    return {h: {STOP_REASON: why} for h, why in peers_to_stop(states).items() if h in hosts}


# ---- stop --------------------------------------------------------------------------------------
def stop(
    inventory: Inventory, hosts: list[str], config: TrainConfig, options: RunOptions, reporter: Reporter
) -> RunReport:
    hostvars = _hostvars(inventory, hosts, options)
    order = RunOrder(config, {h: run_paths(config, hostvars[h]) for h in hosts})
    play = _play(f"stop {config.job.run_name}", hosts, _stop_task(order, peer=False, reason=STOPPED_BY_USER),
                 gather_facts=False)  # fmt: skip
    return run_playbook(Playbook(str(config.path), (play,)), inventory, options, reporter, command="train stop")


# ---- what will really run ---------------------------------------------------------------------------
def attention_on(session: Session, facts: Mapping[str, Facts], config_path: str | None = None) -> dict[str, str]:
    """Per host, what train_grpo.py says training the config's model there will use (`eager
    (gpt_oss attention sinks: ...)`), asked with the environment a launch would give the job;
    `-` where the config's job is not train_grpo.py."""
    config = load_config(config_path)
    if not config.runs_train_grpo:
        return dict.fromkeys(facts, "-")
    script = config.local_file(config.job.script).read_bytes()

    def ask(host: str, conn: Any) -> str:
        hostvars = session.hostvars(host)
        env = dict(config.job.env)
        attn, _ = requested_attention(hostvars, config.job.env, facts[host].stack)
        if attn:
            env["ATTN_IMPL"] = attn
        python = str(host_setting(hostvars, "train_python", config.job.python))
        workdir = str(host_setting(hostvars, "train_workdir", config.job.workdir))
        check = attention_check(workdir, python, script, config.content, env)
        out = conn.run(check, timeout=ATTENTION_TIMEOUT).stdout.strip().splitlines()
        return attention_text(out[-1] if out else "")

    return {h: a if isinstance(a, str) else f"unknown ({a})" for h, a in each_host(session, list(facts), ask).items()}


# ---- logs --------------------------------------------------------------------------------------
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
    (one poll per host per interval) until no host's job runs any more or Ctrl-C. Not a play:
    it only reads, and its output is the log itself."""
    code = 0
    with Session(inventory, options) as session:
        paths = {h: run_paths(config, session.hostvars(h)) for h in hosts}
        printer = LogPrinter(max(len(h) for h in hosts), as_json, session.redactor())

        def first(host: str, conn: Any) -> tuple[str, int]:
            size = f"stat -c '@@size %s' {paths[host].q('training.log')} 2>/dev/null\n"
            out = conn.run(tail_script(paths[host], lines) + size, timeout=PROBE_TIMEOUT).stdout
            body, _, size = out.rpartition("@@size ")
            return (body, int(size)) if size.strip().isdigit() else (out, 0)

        offsets: dict[str, int] = {}
        for host, got in each_host(session, hosts, first, options.forks).items():
            if isinstance(got, Unreachable):
                printer.unreachable(host, session.redactor(host).show(str(got)))
                code = 4
                continue
            printer(host, got[0])
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
                    printer.unreachable(host, session.redactor(host).show(str(got)))
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
                    printer(host, complete)
                offsets[host] = end
                running_any = running_any or running
            idle_polls = 0 if running_any else idle_polls + 1
        for host, rest in partial.items():
            if rest:
                printer(host, rest)
    return code
