"""`fleet train --backend slurm`: the four operations through the login host's connection (the
machine fleet runs on, unless the config's `slurm.login` names an inventory host). The nodes come
from the host pattern (their `slurm_node` names) or from a partition and a node count."""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..inventory import Inventory
from ..model import FleetError, RunOptions, RunReport, Status, TaskResult, Unreachable
from ..report import Reporter
from ..runner import Session
from ..sanitize import visible
from .config import TrainConfig, host_setting
from .control import HostStatus
from .jobs import LOG, STOPPED_BY_USER, RunPaths, follow_script, tail_script
from .plan import job_files
from .slurm import BatchSpec, cancel_script, node_names, parse_state, parse_submit, state_probe, submit_script

PROBE_TIMEOUT = 60
LOCAL = "localhost"


@dataclass(frozen=True)
class Target:
    """Where the run is submitted from and what it asks Slurm for."""

    login: str  # inventory host (or the local machine) that runs sbatch/squeue/scancel
    hostvars: dict[str, Any]  # train_python, train_workdir, ... of the run
    nodelist: tuple[str, ...]
    nodes: int
    partition: str | None


def resolve_target(
    inventory: Inventory, hosts: Sequence[str], config: TrainConfig, partition: str | None, nodes: int | None
) -> tuple[Inventory, Target]:
    slurm = config.job.slurm
    partition = partition or slurm.partition
    if partition and nodes is None and not hosts:
        nodes = slurm.nodes
    nodelist = () if partition and not hosts else node_names(hosts, {h: inventory.host(h).vars for h in hosts})
    count = nodes or len(nodelist) or slurm.nodes
    if nodelist and count != len(nodelist):
        raise FleetError(f"--nodes {count} but the host pattern selects {len(nodelist)} node(s): give one of them")
    login = slurm.login or LOCAL
    if login in inventory.hosts:
        hostvars = dict(inventory.host(login).vars)
    else:
        if slurm.login:
            raise FleetError(f"{config.path}: slurm.login {login!r} is not a host of the inventory")
        hostvars = {**(inventory.host(hosts[0]).vars if hosts else {}), "connection": "local"}
        local = Inventory(source="<slurm login: this machine>")
        local.group("all")
        local.add_host(LOCAL, "all", hostvars)
        inventory = local
    return inventory, Target(login, hostvars, tuple(nodelist), count, partition)


def _paths(config: TrainConfig, target: Target) -> RunPaths:
    return RunPaths(str(host_setting(target.hostvars, "train_workdir", config.job.workdir)), config.job.run_name)


def _spec(config: TrainConfig, target: Target, mode: str) -> BatchSpec:
    job = config.job
    hv = target.hostvars
    nproc = int(host_setting(hv, "nproc_per_node", job.nproc_per_node))
    budget = int(host_setting(hv, "gpu_memory_budget_mib", job.gpu_memory_budget_mib))
    env = {
        **job.env,
        "FLEET_RUN": job.run_name,
        "FLEET_GPU_BUDGET_MIB": str(budget),
        "PYTHONUNBUFFERED": "1",
        "NNODES": str(target.nodes),
    }
    if config.has_attention_sinks:
        env["ATTN_IMPL"] = "eager"  # gpt-oss attention sinks (train_grpo.py's SINK_MODELS)
    args = ("--config", config.path.name, *job.args, *(("--resume",) if mode == "resume" else ()))
    return BatchSpec(
        paths=_paths(config, target),
        python=str(host_setting(hv, "train_python", job.python)),
        script=config.local_file(job.script).name,
        args=args,
        env=env,
        nodes=target.nodes,
        nodelist=target.nodelist,
        partition=target.partition,
        nproc_per_node=nproc,
        gpus_per_node=nproc if job.require_gpu else 0,
        port=int(hv.get("master_port") or job.master_port),
        time_limit=job.slurm.time,
        tag=f"{job.run_name}@slurm/{uuid.uuid4().hex[:12]}",
    )


def _result(report: RunReport, reporter: Reporter, host: str, task: str, status: Status, message: str) -> int:
    shown = reporter.redactor.show(message)  # secrets masked, control characters escaped
    result = TaskResult(host, task, "train", status, shown)
    report.host(host).results.append(result)
    reporter.task_done(result)
    return 0


def launch(
    inventory: Inventory,
    target: Target,
    config: TrainConfig,
    options: RunOptions,
    reporter: Reporter,
    *,
    mode: str = "new",
) -> RunReport:
    report = RunReport()
    task = f"train {config.job.run_name} (slurm)"
    host = target.login
    with Session(inventory, options) as session:
        reporter.redactor = session.redactor()
        reporter.play_started(task, [host])
        try:
            conn = session.connection(host)
            paths = _paths(config, target)
            state, checkpoints, has_sbatch = parse_state(conn.run(state_probe(paths), timeout=PROBE_TIMEOUT).stdout)
        except Unreachable as exc:
            text = session.redactor(host).show(str(exc))
            report.host(host).unreachable = text
            reporter.host_unreachable(host, text)
            reporter.run_done(report)
            return report
        fail = _refusal(config, state, checkpoints, has_sbatch, mode, paths)
        if fail:
            _result(report, reporter, host, task, Status.FAILED, fail)
        elif state.state in ("pending", "running"):
            job_id = state.meta.get("slurm_job")
            _result(report, reporter, host, task, Status.OK, f"already {state.state} (slurm job {job_id})")
        else:
            spec = _spec(config, target, mode)
            files = job_files(config)
            meta = {"run": config.job.run_name, "backend": "slurm", "nnodes": target.nodes, "mode": mode,
                    "budget_mib": spec.env["FLEET_GPU_BUDGET_MIB"], "warn_at": config.job.warn_at,
                    "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}  # fmt: skip
            script = submit_script(spec, files, meta, fresh=mode == "force", wait=config.job.launch_wait)
            done = conn.run(script, timeout=PROBE_TIMEOUT + config.job.launch_wait)
            seen = parse_submit(done.stdout)
            where = ",".join(target.nodelist) or f"partition {target.partition}"
            what = {"new": "submitted", "resume": f"resumed from {checkpoints[-1] if checkpoints else '-'}",
                    "force": "replaced and submitted"}[mode]  # fmt: skip
            summary = f"{what} {config.job.run_name} as slurm job {seen.job_id} ({target.nodes} node(s): {where})"
            if not done.ok or not seen.job_id:
                _result(report, reporter, host, task, Status.FAILED, f"sbatch failed: {done.brief()}")
            elif seen.state == "failed" or (seen.state == "cancelled"):
                lines = "\n".join(f"    {line}" for line in seen.tail[-10:])
                msg = f"{summary}: it ended {seen.slurm} within {seen.waited}s; last log lines:\n{lines}"
                _result(report, reporter, host, task, Status.FAILED, msg)
            elif seen.state == "finished":
                _result(report, reporter, host, task, Status.CHANGED, f"{summary}; it finished within {seen.waited}s")
            else:
                how = "first step record" if seen.ready else f"{seen.slurm.split()[0] if seen.slurm else '?'}"
                _result(report, reporter, host, task, Status.CHANGED, f"{summary}; {how} after {seen.waited}s")
        report.host(host).commands = session.commands(host)
        reporter.run_done(report)
    return report


def _refusal(
    config: TrainConfig, state: Any, checkpoints: tuple[str, ...], has_sbatch: bool, mode: str, paths: RunPaths
) -> str | None:
    if not has_sbatch:
        return "sbatch not found on the login host (is Slurm's client installed, or slurm.login wrong?)"
    if state.state in ("pending", "running"):
        return None
    exists = state.state != "absent" or bool(checkpoints)
    if mode == "new" and exists:
        step = f" at step {state.progress.step}" if state.progress.step is not None else ""
        return (
            f"run {config.job.run_name} exists ({state.state}{step}, slurm job {state.meta.get('slurm_job')}); "
            "nothing is overwritten: --resume continues it, --run NEW_NAME starts a new run, --force replaces it"
        )
    if mode == "resume" and not checkpoints:
        return f"nothing to resume: no checkpoint-* in {paths.dir}"
    return None


def collect_status(inventory: Inventory, target: Target, config: TrainConfig, options: RunOptions) -> list[HostStatus]:
    with Session(inventory, options) as session:
        try:
            out = session.connection(target.login).run(state_probe(_paths(config, target)), timeout=PROBE_TIMEOUT)
        except Unreachable as exc:
            return [HostStatus(target.login, None, unreachable=session.redactor(target.login).show(str(exc)))]
    state, _, _ = parse_state(out.stdout)
    label = f"slurm:{state.meta.get('slurm_job') or '-'}"
    note = state.meta.get("slurm_state")
    if state.state == "failed" and state.exit_code is not None:
        said = [line for line in state.tail if " fleet: " not in line and any(c.isalnum() for c in line)]
        note = f"{note or ''} exit code {state.exit_code}" + (f": {said[-1]}" if said else "")
    return [HostStatus(label, replace(state, procs=frozenset()), action=(note or "").strip() or None)]


def stop(
    inventory: Inventory, target: Target, config: TrainConfig, options: RunOptions, reporter: Reporter
) -> RunReport:
    report = RunReport()
    task = f"stop {config.job.run_name} (slurm)"
    with Session(inventory, options) as session:
        reporter.redactor = session.redactor()
        reporter.play_started(task, [target.login])
        paths = _paths(config, target)
        result = session.connection(target.login).run(
            cancel_script(paths, STOPPED_BY_USER, config.job.stop_timeout), timeout=config.job.stop_timeout + 30
        )
        if "not-running" in result.stdout:
            _result(report, reporter, target.login, task, Status.OK, "not running")
        elif not result.ok:
            _result(report, reporter, target.login, task, Status.FAILED, f"scancel failed: {result.brief()}")
        elif result.stdout.split("left", 1)[-1].strip():
            _result(report, reporter, target.login, task, Status.FAILED, "the job is still listed by squeue")
        else:
            _result(report, reporter, target.login, task, Status.CHANGED, "cancelled; squeue no longer lists it")
        reporter.run_done(report)
    return report


def show_logs(
    inventory: Inventory,
    target: Target,
    config: TrainConfig,
    options: RunOptions,
    *,
    lines: int,
    follow: bool,
    as_json: bool = False,
) -> int:
    """The job's output (training.log); with follow, new lines until Slurm no longer runs it."""
    paths = _paths(config, target)
    with Session(inventory, options) as session:
        conn = session.connection(target.login)
        from .control import LogPrinter

        printer = LogPrinter(0, as_json, session.redactor())

        def _write(text: str) -> None:
            if as_json:
                printer(target.login, text)
            else:
                _write_plain(text)

        size = f"stat -c '@@size %s' {paths.q(LOG)} 2>/dev/null\n"
        body, _, rest = conn.run(tail_script(paths, lines) + size, timeout=PROBE_TIMEOUT).stdout.rpartition("@@size ")
        _write(body)
        offset = int(rest) if rest.strip().isdigit() else 0
        partial = ""
        while follow:
            time.sleep(1.0)
            state, _, _ = parse_state(conn.run(state_probe(paths), timeout=PROBE_TIMEOUT).stdout)
            out = conn.run(follow_script(paths, offset), timeout=PROBE_TIMEOUT).stdout
            head, _, data = out.partition("\n")
            offset = int((head.split() or ["0", "0"])[1]) if len(head.split()) > 1 else offset
            complete, _, partial = (partial + data).rpartition("\n")
            _write(complete)
            follow = state.state in ("pending", "running")
        _write(partial)
    return 0


def _write_plain(text: str) -> None:
    for line in text.splitlines():
        sys.stdout.write(f"{visible(line)}\n")  # a log's escapes are shown, not obeyed
    sys.stdout.flush()
