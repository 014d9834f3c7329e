"""From a config, the inventory and what each host's preflight saw, to what to do on each host.
Pure: the launch id comes in from outside, the host's state comes in as parsed preflight output."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..health import baseline, errors, expected_gpus, judge
from ..model import FleetError, Plan
from .config import TrainConfig, host_setting
from .jobs import NodeSpec, Preflight, RunPaths, launch_script
from .rendezvous import Rendezvous, plan_rendezvous


def job_files(config: TrainConfig) -> dict[str, bytes]:
    """The files a launch syncs into the workdir, by name there: script, config, extras."""
    job = config.job
    files: dict[str, bytes] = {}
    for local in [config.local_file(job.script), config.path, *(config.local_file(f) for f in job.files)]:
        name = local.name
        if name in files and Path(local).read_bytes() != files[name]:
            raise FleetError(f"{config.path}: two job files are both named {name!r} in the workdir")
        files[name] = config.content if local == config.path else local.read_bytes()
    return files


def visible_gpus(value: Any) -> list[int] | None:
    """`cuda_visible_devices: "0,1"` -> [0, 1]; unset -> None (all GPUs)."""
    if value is None or value == "":
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise FleetError(f"cuda_visible_devices {value!r} must be GPU indexes such as 0 or 0,1") from None


def node_specs(
    config: TrainConfig, hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], launch_id: str
) -> dict[str, NodeSpec]:
    job = config.job
    files = job_files(config)
    script, config_name = config.local_file(job.script).name, config.path.name
    args = ["--config", config_name, *job.args]
    nproc = {h: int(host_setting(hostvars[h], "nproc_per_node", job.nproc_per_node)) for h in hosts}
    rendezvous = plan_rendezvous(hosts, hostvars, job.master_port, nproc) if job.multi_node else {}
    _refuse_shared_workdirs(hosts, hostvars, job.workdir)
    specs = {}
    for host in hosts:
        hv = hostvars[host]
        python = str(host_setting(hv, "train_python", job.python))
        workdir = str(host_setting(hv, "train_workdir", job.workdir))
        budget = int(host_setting(hv, "gpu_memory_budget_mib", job.gpu_memory_budget_mib))
        gpus = visible_gpus(hv.get("cuda_visible_devices"))
        rdzv = rendezvous.get(host)
        if rdzv is None and (nproc[host] > 1 or job.launcher == "torchrun"):
            rdzv = Rendezvous("127.0.0.1", int(hv.get("master_port") or job.master_port), 1, 0, nproc[host])
        use_torchrun = rdzv is not None and job.launcher != "python"
        if job.launcher == "python" and (job.multi_node or nproc[host] > 1):
            raise FleetError(f"{config.path}: launcher python runs one process; multi-node and nproc_per_node>1 "
                             "need torchrun (or auto)")  # fmt: skip
        argv = rdzv.torchrun(python, script, args) if use_torchrun and rdzv else [python, script, *args]
        env = {
            **job.env,
            "FLEET_RUN": job.run_name,
            "FLEET_GPU_BUDGET_MIB": str(budget),
            "PYTHONUNBUFFERED": "1",  # step lines reach the log as they happen
            **(rdzv.env() if rdzv and job.multi_node else {}),
        }
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        meta = {
            "run": job.run_name,
            "launch_id": launch_id,
            "host": host,
            "node_rank": rdzv.node_rank if rdzv else 0,
            "nnodes": rdzv.nnodes if rdzv else 1,
            "hosts": list(hosts) if job.multi_node else [host],
            "gpus": gpus,
            "budget_mib": budget,
            "warn_at": job.warn_at,
            "argv": argv,
            "files": {name: hashlib.sha256(body).hexdigest() for name, body in files.items()},
        }
        specs[host] = NodeSpec(
            host, RunPaths(workdir, job.run_name), tuple(argv), env, f"{job.run_name}@{host}/{launch_id}", meta
        )
    return specs


def _refuse_shared_workdirs(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], workdir: str) -> None:
    """Two inventory hosts on one machine (both local, or one address, port and user) would share
    pid and log files unless each has its own `train_workdir`."""
    seen: dict[tuple[Any, ...], str] = {}
    for host in hosts:
        hv = hostvars[host]
        if hv.get("connection") == "local":
            machine: tuple[Any, ...] = ("local",)
        else:
            machine = ("ssh", hv.get("address", host), hv.get("port"), hv.get("user"))
        key = (*machine, str(host_setting(hv, "train_workdir", workdir)))
        if key in seen:
            raise FleetError(
                f"hosts {seen[key]} and {host} are one machine with one workdir; give each its own "
                "`train_workdir` host var so their runs do not share pid and log files"
            )
        seen[key] = host


def attention_impl(
    hostvars: Mapping[str, Any], env: Mapping[str, str], stack: Mapping[str, Any], config: TrainConfig
) -> tuple[str | None, str]:
    """The host's ATTN_IMPL and why: eager for a model with attention sinks (gpt-oss), whatever
    else is set; else the host var, the config's env, or what the setup playbook recorded as
    working on that host; None lets train_grpo.py walk its fallback chain."""
    if config.has_attention_sinks:
        return "eager", "gpt-oss attention sinks"
    for value, source in ((hostvars.get("attn_impl"), "host var"), (env.get("ATTN_IMPL"), "config env"),
                          (stack.get("attn_impl"), "setup stack")):  # fmt: skip
        if value:
            return str(value), source
    return None, "auto"


def preflight_failure(spec: NodeSpec, pre: Preflight, config: TrainConfig) -> str | None:
    job = config.job
    if not pre.python_found:
        python = spec.argv[0]
        return (
            f"python {python!r} not found in {spec.paths.workdir} (run the setup playbook, or set the "
            "`train_python` host var)"
        )
    if pre.missing_modules:
        return f"{spec.argv[0]} cannot import {', '.join(pre.missing_modules)} (run the setup playbook)"
    if job.require_stack and not pre.facts.stack:
        return "no training stack recorded in ~/.fleet/facts.d/stack.json (run the setup playbook first)"
    if not job.require_gpu:
        return None
    if not pre.facts.gpus:
        return (
            "no GPU found"
            + (f" ({pre.facts.gpu_error})" if pre.facts.gpu_error else "")
            + ("; set `require_gpu: false` in the job config to run without one")
        )
    wanted = spec.meta.get("gpus")
    gpus = {g.index: g for g in pre.facts.gpus}
    for index in wanted if wanted is not None else sorted(gpus):
        gpu = gpus.get(index)
        if gpu is None:
            return f"GPU {index} (cuda_visible_devices) does not exist; the host has {sorted(gpus)}"
        if gpu.memory_free_mib < job.min_free_gpu_mib:
            return (
                f"GPU {index} has {gpu.memory_free_mib} MiB free, the job needs {job.min_free_gpu_mib} "
                "(is another job running there? see nvidia-smi)"
            )
    return None


def health_failure(pre: Preflight, hostvars: Mapping[str, Any], host: str) -> str | None:
    """Why the host's GPUs are unfit to train on (fleet.health), or None."""
    try:
        expected = expected_gpus(hostvars)
    except ValueError as exc:
        raise FleetError(f"host {host}: {exc}") from None
    bad = errors(judge(pre.facts.health, expected_gpus=expected, gpu_error=pre.facts.gpu_error))
    if not bad:
        return None
    return (
        f"GPU health: {'; '.join(p.text for p in bad)} (fleet doctor shows the remedies; "
        "--ignore-health launches anyway)"
    )


MODES = ("new", "resume", "force")


def plan_launch(
    spec: NodeSpec,
    pre: Preflight,
    config: TrainConfig,
    hostvars: Mapping[str, Any],
    mode: str = "new",
    *,
    ignore_health: bool = False,
) -> Plan:
    """Nothing when the run already runs there; a failure when the host is not fit or when the
    launch would overwrite a run that exists there (unless `mode` says resume or force); else the
    one script that syncs the changed files and starts the job."""
    state = pre.state
    name = config.job.run_name
    if state.state == "running":
        step = f", step {state.progress.step}" if state.progress.step is not None else ""
        return Plan(summary=f"already running (pid {state.pid}{step})", data={"running": True})
    if state.leftovers:
        pids = " ".join(map(str, sorted(state.leftovers)))
        return Plan(fail=f"processes {pids} of the last launch are still alive; end them first (fleet train stop)")
    exists = state.state != "absent" or bool(pre.checkpoints)
    if mode == "new" and exists:
        step = f" at step {state.progress.step}" if state.progress.step is not None else ""
        what = state.state if state.state != "absent" else "has checkpoints"
        return Plan(
            fail=f"run {name} exists here ({what}{step}); nothing is overwritten: --resume continues it from its "
            "newest checkpoint, --run NEW_NAME starts a new run, --force replaces it"
        )
    if mode == "resume" and not pre.checkpoints:
        where = spec.paths.dir
        return Plan(
            fail=f"nothing to resume: no checkpoint-* in {where} (the config's grpo: save_strategy/save_steps "
            "make checkpoints)"
        )
    failure = preflight_failure(spec, pre, config)
    if not failure and not ignore_health:
        failure = health_failure(pre, hostvars, spec.host)
    if failure:
        return Plan(fail=failure)
    env = dict(spec.env)
    attn, why = attention_impl(hostvars, spec.env, pre.facts.stack, config)
    if attn:
        env["ATTN_IMPL"] = attn
    argv = (*spec.argv, "--resume") if mode == "resume" else spec.argv
    # the GPUs' counters at launch: `fleet train status` tells a GPU that turned sick during the run
    meta = {**spec.meta, "argv": list(argv), "mode": mode, "health": baseline(pre.facts.health)}
    spec = replace(spec, env=env, argv=argv, meta=meta)
    files = job_files(config)
    changed = {n: body for n, body in files.items() if pre.file_sha.get(n) != hashlib.sha256(body).hexdigest()}
    rank = f"node {spec.meta['node_rank']}/{spec.meta['nnodes']}, " if spec.meta["nnodes"] > 1 else ""
    synced = f"; synced {', '.join(changed)}" if changed else "; files unchanged"
    verb = {"new": "started", "resume": f"resumed from {pre.newest_checkpoint}", "force": "replaced and started"}
    return Plan(
        script=launch_script(spec, changed, mode=mode, wait=config.job.launch_wait),
        summary=f"{verb[mode]} {name} ({rank}{config.model}, ATTN_IMPL={attn or 'auto'} ({why})){synced}",
        data={"synced": sorted(changed), "attn_impl": attn, "checkpoint": pre.newest_checkpoint, "mode": mode},
    )
