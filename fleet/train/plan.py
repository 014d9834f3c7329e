"""From a config, the inventory and what each host's preflight saw, to what to do on each host.
Pure: the launch id comes in from outside, the host's state comes in as parsed preflight output."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..facts import Facts
from ..health import baseline, errors, expected_gpus, judge
from ..model import FleetError, Plan
from .config import TrainConfig, host_setting
from .jobs import Imports, NodeSpec, Preflight, RunPaths, attention_check, job_env, launch_script
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
        env = job_env(job, budget, **(rdzv.env() if rdzv and job.multi_node else {}))
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


def requested_attention(
    hostvars: Mapping[str, Any], env: Mapping[str, str], stack: Mapping[str, Any]
) -> tuple[str | None, str]:
    """The ATTN_IMPL a job on this host is asked to use, and where that comes from: the host var,
    the config's env, or what the setup playbook recorded as working there; None lets the script
    walk its chain. train_grpo.py has the last word per model (eager for gpt-oss's attention
    sinks): `attention_check` asks it what it will really use."""
    for value, source in ((hostvars.get("attn_impl"), "host var"), (env.get("ATTN_IMPL"), "config env"),
                          (stack.get("attn_impl"), "setup stack")):  # fmt: skip
        if value:
            return str(value), source
    return None, "auto"


def imports_failure(spec: NodeSpec, imports: Imports) -> str | None:
    """Why the job's python cannot run it: not there, or a module it needs does not import."""
    if not imports.python_found:
        return (
            f"python {spec.argv[0]!r} not found in {spec.paths.workdir} (run the setup playbook, or set the "
            "`train_python` host var)"
        )
    if imports.missing:
        return f"{spec.argv[0]} cannot import {', '.join(imports.missing)} (run the setup playbook)"
    return None


def preflight_failure(spec: NodeSpec, facts: Facts, config: TrainConfig) -> str | None:
    job = config.job
    if job.require_stack and not facts.stack:
        return "no training stack recorded in ~/.fleet/facts.d/stack.json (run the setup playbook first)"
    if not job.require_gpu:
        return None
    if not facts.gpus:
        return (
            "no GPU found"
            + (f" ({facts.gpu_error})" if facts.gpu_error else "")
            + ("; set `require_gpu: false` in the job config to run without one")
        )
    wanted = spec.meta.get("gpus")
    gpus = {g.index: g for g in facts.gpus}
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


def health_failure(facts: Facts, hostvars: Mapping[str, Any], host: str) -> str | None:
    """Why the host's GPUs are unfit to train on (fleet.health), or None."""
    try:
        expected = expected_gpus(hostvars)
    except ValueError as exc:
        raise FleetError(f"host {host}: {exc}") from None
    bad = errors(judge(facts.health, expected_gpus=expected, gpu_error=facts.gpu_error))
    if not bad:
        return None
    return (
        f"GPU health: {'; '.join(p.text for p in bad)} (fleet doctor shows the remedies; "
        "--ignore-health launches anyway)"
    )


def plan_launch(
    spec: NodeSpec,
    pre: Preflight,
    facts: Facts,
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
    failure = preflight_failure(spec, facts, config)
    if not failure and not ignore_health:
        failure = health_failure(facts, hostvars, spec.host)
    if failure:
        return Plan(fail=failure)
    env = dict(spec.env)
    attn, why = requested_attention(hostvars, spec.env, facts.stack)
    if attn:
        env["ATTN_IMPL"] = attn
    argv = (*spec.argv, "--resume") if mode == "resume" else spec.argv
    # the GPUs' counters at launch: `fleet train status` tells a GPU that turned sick during the run
    meta = {**spec.meta, "argv": list(argv), "mode": mode, "health": baseline(facts.health)}
    spec = replace(spec, env=env, argv=argv, meta=meta)
    files = job_files(config)
    changed = {n: body for n, body in files.items() if pre.file_sha.get(n) != hashlib.sha256(body).hexdigest()}
    rank = f"node {spec.meta['node_rank']}/{spec.meta['nnodes']}, " if spec.meta["nnodes"] > 1 else ""
    synced = f"; synced {', '.join(changed)}" if changed else "; files unchanged"
    verb = {"new": "started", "resume": f"resumed from {pre.newest_checkpoint}", "force": "replaced and started"}
    asked = f", ATTN_IMPL={attn} ({why})" if attn else ""
    ask = _ask_attention(spec, config)
    return Plan(
        script=launch_script(spec, changed, mode=mode, wait=config.job.launch_wait, attention=ask),
        summary=f"{verb[mode]} {name} ({rank}{config.model}{asked}){synced}",
        data={"synced": sorted(changed), "attn_impl": attn, "checkpoint": pre.newest_checkpoint, "mode": mode},
    )


def _ask_attention(spec: NodeSpec, config: TrainConfig) -> str:
    """For fleet's own training script: ask it, on the host, with the job's environment."""
    if not config.runs_train_grpo:
        return ""
    script = config.local_file(config.job.script).read_bytes()
    return attention_check(spec.paths.workdir, spec.argv[0], script, config.content, spec.env) + "\n"


def launch_barrier(nodes: Sequence[str], seen: Mapping[str, Mapping[str, Any] | str]) -> dict[str, str | None]:
    """A multi-node run starts on every node or on none: a node missing at rendezvous hangs the
    rest, and a resume starts only when every node resumes from the same checkpoint.

    seen: per node, its preflight plan's data, or why it cannot join (failed, unreachable); a node
    absent from it did not answer. Returns, per node that can still act, why it must not launch,
    or None (launch: its own plan starts the job, or finds it running)."""
    fit = {h: d for h, d in seen.items() if not isinstance(d, str)}
    blockers = [(h, seen.get(h)) for h in nodes if isinstance(seen.get(h), str) or h not in seen]
    running = [h for h, d in fit.items() if d.get("running")]
    if running and len(running) < len(nodes):
        why = f"the run is already running on {', '.join(running)} but not on every node; stop it first"
        return {h: None if h in running else why for h in fit}
    if blockers and not running:
        named = "; ".join(f"{h}: {why or 'no answer'}" for h, why in blockers)
        return dict.fromkeys(fit, f"not started on any node: {named}")
    checkpoints = {h: d.get("checkpoint") for h, d in fit.items() if d.get("mode") == "resume"}
    if len(set(checkpoints.values())) > 1:
        found = ", ".join(f"{h}: {c}" for h, c in checkpoints.items())
        why = f"not resumed: the nodes' newest checkpoints differ ({found}); every node must resume from the same step"
        return dict.fromkeys(fit, why)
    return dict.fromkeys(fit)
