"""The Slurm backend as pure functions: the batch script of a run, the shell that submits,
observes and cancels it on a login host, and the parsers of what those print.

A run lives in `<workdir>/runs/<run>/` on a filesystem the login host and the nodes share (as on
Slurm clusters): batch.sh, slurm.jobid, training.log (the job's output), job.exit, job.stopped.
The batch script starts one `torchrun` per node through `srun`, the rendezvous taken from
SLURM_* (c10d on the job's first node, the job id as rendezvous id): fleet chooses no ranks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import shell
from ..facts import sections
from ..model import Plan
from .config import TrainConfig, host_setting
from .jobs import (
    LOG,
    STEP_RECORD,
    JobState,
    RunPaths,
    checkpoint_section,
    exports,
    job_env,
    log_sections,
    outcome_lines,
    parse_checkpoints,
    parse_progress,
    python_word,
    section_fn,
)

# squeue / scontrol / sacct states -> fleet's states (CANCELLED: `stopped` when fleet cancelled it)
_STATES = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "RESIZING": "pending",
    "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running", "STAGE_OUT": "running",
    "COMPLETED": "finished",
    "CANCELLED": "cancelled",
    "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "PREEMPTED": "failed", "REVOKED": "failed",
}  # fmt: skip


@dataclass(frozen=True)
class BatchSpec:
    """Everything the batch script says, decided before the login host is touched."""

    paths: RunPaths
    python: str
    script: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    nodes: int
    nodelist: tuple[str, ...]  # empty: any nodes of the partition
    partition: str | None
    nproc_per_node: int
    gpus_per_node: int  # 0: no GPU request
    port: int
    time_limit: str | None
    tag: str


def batch_script(spec: BatchSpec) -> str:
    """batch.sh: srun starts one torchrun per node; rendezvous from SLURM_*; the exit code lands
    in job.exit as with the SSH backend, so the run's end is known after Slurm forgot the job."""
    p = spec.paths
    directives = [f"--job-name={spec.paths.run}", f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    if spec.nodelist:
        directives.append(f"--nodelist={','.join(spec.nodelist)}")
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    if spec.gpus_per_node:
        directives.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.time_limit:
        directives.append(f"--time={spec.time_limit}")
    torchrun = " ".join([
        python_word(spec.python), "-m", "torch.distributed.run",
        '--nnodes="$SLURM_NNODES"', f"--nproc_per_node={int(spec.nproc_per_node)}",
        "--rdzv_backend=c10d", f'--rdzv_endpoint="$head:{int(spec.port)}"', '--rdzv_id="$SLURM_JOB_ID"',
        "--max_restarts=0", shell.quote(spec.script), *map(shell.quote, spec.args),
    ])  # fmt: skip
    return (
        "#!/bin/bash\n"
        + "".join(f"#SBATCH {shell.quote(d)}\n" for d in directives)
        + f"# fleet train: run {p.run} (Slurm backend)\n"
        + exports({**spec.env, "FLEET_JOB": spec.tag})
        + 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        # the first node's address as Slurm knows it (NodeAddr; the node name where none is set)
        + 'addr=$(scontrol -o show node "$head" 2>/dev/null | tr " " "\\n" | sed -n "s/^NodeAddr=//p")\n'
        + "head=${addr:-$head}\n"
        + "stamp() { date '+%Y-%m-%d %H:%M:%S'; }\n"
        + 'echo "$(stamp) fleet: slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous $head"\n'
        + f"srun --kill-on-bad-exit=1 {torchrun}\n"
        + "rc=$?\n"
        + 'echo "$(stamp) fleet: job exited with code $rc"\n'
        + f"echo $rc > {p.q('job.exit.tmp')} && mv -f {p.q('job.exit.tmp')} {p.q('job.exit')}\n"
        + "exit $rc\n"
    )


def _job_state_fn(paths: RunPaths) -> str:
    """`jobstate`: `<STATE> <exit code>` of the run's Slurm job: squeue while Slurm schedules it,
    then scontrol (the controller's memory of ended jobs), then sacct (accounting, when kept)."""
    return (
        f"id=$(cat {paths.q('slurm.jobid')} 2>/dev/null)\n"
        "jobstate() {\n"
        '  [ -n "$id" ] || return 0\n'
        '  s=$(squeue -h -j "$id" -o "%T" 2>/dev/null | head -n 1)\n'
        '  if [ -n "$s" ]; then echo "$s -"; return 0; fi\n'
        '  s=$(scontrol -o show job "$id" 2>/dev/null | tr " " "\\n" | grep -E "^(JobState|ExitCode)=" '
        "| cut -d= -f2 | tr '\\n' ' ')\n"
        '  if [ -n "$s" ]; then echo "$s"; return 0; fi\n'
        '  sacct -n -X -P -j "$id" -o State,ExitCode 2>/dev/null | head -n 1 | tr "|" " "\n'
        "}\n"
    )


def state_probe(paths: RunPaths) -> str:
    q = paths.q
    return (
        section_fn() + _job_state_fn(paths) + "s slurm_state\n"
        'echo "now $(date +%s)"\n'
        'echo "jobid $id"\n'
        'echo "slurm $(jobstate)"\n'
        + outcome_lines(paths)
        + f'[ -f {q("slurm.jobid")} ] && echo "started $(stat -c %Y {q("slurm.jobid")})"\n'
        + log_sections(paths, 12)
        + checkpoint_section(paths, "slurm_checkpoints")
        + "s slurm_tools\n"
        "command -v sbatch >/dev/null 2>&1 && echo sbatch\n"
        "s slurm_end\n"
    )


def parse_state(text: str) -> tuple[JobState, tuple[str, ...], bool]:
    """(the run's state, its checkpoint-N directories oldest first, whether sbatch is there)."""
    sec = sections(text)
    values: dict[str, str] = {}
    for line in sec.get("slurm_state", "").splitlines():
        key, _, rest = line.partition(" ")
        values[key] = rest.strip()
    slurm, _, slurm_exit = values.get("slurm", "").partition(" ")
    exit_code = ended = None
    if values.get("exit"):
        code, _, mtime = values["exit"].partition(" ")
        exit_code = int(code) if code.lstrip("-").isdigit() else -1
        ended = int(mtime) if mtime.isdigit() else None
    elif slurm_exit[:1].isdigit():  # scontrol/sacct ExitCode=<code>:<signal>
        code, _, signal = slurm_exit.partition(":")
        exit_code = int(code) or (128 + int(signal) if signal.strip().isdigit() and int(signal) else 0)
    stopped = values.get("stopped", "").partition(" ")[2].strip() or None  # `<mtime> <why>`
    state = _STATES.get(slurm.split()[0].rstrip("+") if slurm else "", "")
    if state == "cancelled":
        state = "stopped" if stopped else "failed"
    if not state:  # Slurm no longer knows the job: its exit file says how it ended
        if not values.get("jobid"):
            state = "absent"
        elif exit_code is not None:
            state = "finished" if exit_code == 0 else ("stopped" if stopped else "failed")
        else:
            state = "stopped" if stopped else "lost"
    try:
        meta = json.loads(values["meta"]) if values.get("meta") else {}
    except json.JSONDecodeError:
        meta = {}
    meta = {**meta, "slurm_job": values.get("jobid") or None, "slurm_state": slurm or None}
    job = JobState(
        state=state,
        exit_code=exit_code,
        started=int(values["started"]) if values.get("started", "").isdigit() else None,
        ended=ended,
        now=int(values["now"]) if values.get("now", "").isdigit() else None,
        stopped_reason=stopped,
        meta=meta,
        progress=parse_progress(sec.get("train_step", "")),
        tail=tuple(line for line in sec.get("train_tail", "").splitlines() if line.strip()),
    )
    return job, parse_checkpoints(sec.get("slurm_checkpoints", "")), "sbatch" in sec.get("slurm_tools", "")


def submit_script(
    spec: BatchSpec, synced: Mapping[str, bytes], meta: Mapping[str, object], *, fresh: bool, wait: int
) -> str:
    """Write the files and batch.sh, sbatch it from the workdir (its output: the run's log), then
    watch it up to `wait` seconds: until its first step record or its end; say which."""
    p = spec.paths
    parts = []
    if fresh:
        parts.append(f"rm -rf -- {shell.path(p.dir)}\n")
    parts.append(f"mkdir -p {shell.path(p.dir)} && cd {shell.path(p.workdir)} || exit 1\n")
    for name, content in synced.items():
        parts.append(shell.write_file(f"{p.workdir.rstrip('/')}/{name}", content))
    parts.append(shell.write_file(p.file("batch.sh"), batch_script(spec).encode(), 0o700))
    parts.append(shell.write_file(p.file("job.json"), json.dumps(dict(meta), sort_keys=True).encode()))
    parts.append(
        f"rm -f {p.q('job.exit')} {p.q('job.stopped')}\n"
        f"off=$(stat -c %s {p.q(LOG)} 2>/dev/null || echo 0)\n"
        f'id=$(sbatch --parsable --chdir="$PWD" --open-mode=append --output="$PWD/runs/{p.run}/{LOG}" '
        f"{p.q('batch.sh')}) || exit 1\n"
        "id=${id%%;*}\n"
        f'echo "$id" > {p.q("slurm.jobid")}\n'
        'echo "jobid $id"\n' + _job_state_fn(p) + f"new() {{ tail -c +$((off + 1)) {p.q(LOG)} 2>/dev/null; }}\n"
        "i=0\n"
        f"while [ $i -lt {int(wait) * 2} ]; do\n"
        '  case "$(jobstate)" in PENDING*|CONFIGURING*|RUNNING*|COMPLETING*|"") ;; *) break;; esac\n'
        f"  if new | grep -q -a -E '{STEP_RECORD}'; then echo ready; break; fi\n"
        "  sleep 0.5; i=$((i+1))\n"
        "done\n"
        'echo "waited $((i / 2))"\n'
        'echo "slurm $(jobstate)"\n'
        "echo @@tail\n"
        "new | tail -n 12 | cut -c1-300\n"
    )
    return "".join(parts)


@dataclass(frozen=True)
class Submitted:
    job_id: str | None
    waited: int
    slurm: str  # the job's Slurm state at the end of the watch
    ready: bool
    tail: tuple[str, ...]

    @property
    def state(self) -> str:
        return _STATES.get(self.slurm.split()[0].rstrip("+") if self.slurm else "", "unknown")


def parse_submit(text: str) -> Submitted:
    head, _, tail = text.partition("@@tail\n")
    values: dict[str, str] = {}
    for line in head.splitlines():
        key, _, rest = line.partition(" ")
        values.setdefault(key, rest.strip())
    return Submitted(
        job_id=values.get("jobid") or None,
        waited=int(values["waited"]) if values.get("waited", "").isdigit() else 0,
        slurm=values.get("slurm", ""),
        ready="ready" in values,
        tail=tuple(line for line in tail.splitlines() if line.strip()),
    )


def cancel_script(paths: RunPaths, reason: str, timeout: int) -> str:
    """scancel the run's job (recording why first), wait (bounded) until Slurm lists it no more."""
    return (
        _job_state_fn(paths) + 'case "$(jobstate)" in PENDING*|CONFIGURING*|RUNNING*|COMPLETING*|SUSPENDED*) ;; '
        "*) echo not-running; exit 0;; esac\n"
        f"printf '%s\\n' {shell.quote(reason)} > {paths.q('job.stopped')}\n"
        'scancel "$id" || exit 1\n'
        f'i=0; while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ] && [ $i -lt {timeout * 10} ]; do '
        "sleep 0.1; i=$((i+1)); done\n"
        'echo "left $(squeue -h -j "$id" -o %i 2>/dev/null)"\n'
    )


def node_names(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, object]]) -> tuple[str, ...]:
    """Slurm's names of the selected inventory hosts: `slurm_node`, else the inventory name."""
    return tuple(str(hostvars[h].get("slurm_node") or h) for h in hosts)


# ---- planning (pure) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the run is submitted from and what it asks Slurm for."""

    login: str  # inventory host (or the local machine) that runs sbatch/squeue/scancel
    hostvars: Mapping[str, Any]  # train_python, train_workdir, ... of the run
    nodelist: tuple[str, ...]
    nodes: int
    partition: str | None

    def paths(self, config: TrainConfig) -> RunPaths:
        return RunPaths(str(host_setting(self.hostvars, "train_workdir", config.job.workdir)), config.job.run_name)


@dataclass(frozen=True)
class SlurmSeen:
    """What the login host showed of the run: its state, checkpoints, whether sbatch is there."""

    state: JobState
    checkpoints: tuple[str, ...]
    has_sbatch: bool


def observe(text: str) -> SlurmSeen:
    return SlurmSeen(*parse_state(text))


def batch_spec(config: TrainConfig, target: Target, mode: str, launch_id: str) -> BatchSpec:
    job = config.job
    hv = target.hostvars
    nproc = int(host_setting(hv, "nproc_per_node", job.nproc_per_node))
    budget = int(host_setting(hv, "gpu_memory_budget_mib", job.gpu_memory_budget_mib))
    args = ("--config", config.path.name, *job.args, *(("--resume",) if mode == "resume" else ()))
    return BatchSpec(
        paths=target.paths(config),
        python=str(host_setting(hv, "train_python", job.python)),
        script=config.local_file(job.script).name,
        args=args,
        env=job_env(job, budget, NNODES=str(target.nodes)),
        nodes=target.nodes,
        nodelist=target.nodelist,
        partition=target.partition,
        nproc_per_node=nproc,
        gpus_per_node=nproc if job.require_gpu else 0,
        port=int(hv.get("master_port") or job.master_port),
        time_limit=job.slurm.time,
        tag=f"{job.run_name}@slurm/{launch_id}",
    )


def plan_submit(
    seen: SlurmSeen, config: TrainConfig, target: Target, files: Mapping[str, bytes], mode: str, launch_id: str
) -> Plan:
    """Nothing while the run is pending or running; a failure where the login host cannot submit
    or a submission would overwrite a run (unless `mode` says resume or force); else the script
    that writes the files and batch.sh and submits it."""
    state, run = seen.state, config.job.run_name
    if not seen.has_sbatch:
        return Plan(fail="sbatch not found on the login host (is Slurm's client installed, or slurm.login wrong?)")
    if state.state in ("pending", "running"):
        return Plan(summary=f"already {state.state} (slurm job {state.meta.get('slurm_job')})")
    exists = state.state != "absent" or bool(seen.checkpoints)
    if mode == "new" and exists:
        step = f" at step {state.progress.step}" if state.progress.step is not None else ""
        return Plan(
            fail=f"run {run} exists ({state.state}{step}, slurm job {state.meta.get('slurm_job')}); "
            "nothing is overwritten: --resume continues it, --run NEW_NAME starts a new run, --force replaces it"
        )
    if mode == "resume" and not seen.checkpoints:
        return Plan(fail=f"nothing to resume: no checkpoint-* in {target.paths(config).dir}")
    spec = batch_spec(config, target, mode, launch_id)
    meta = {"run": run, "backend": "slurm", "nnodes": target.nodes, "mode": mode,
            "budget_mib": spec.env["FLEET_GPU_BUDGET_MIB"], "warn_at": config.job.warn_at,
            "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}  # fmt: skip
    where = ",".join(target.nodelist) or f"partition {target.partition}"
    what = {"new": "submitted", "resume": f"resumed from {seen.checkpoints[-1] if seen.checkpoints else '-'}",
            "force": "replaced and submitted"}[mode]  # fmt: skip
    return Plan(
        script=submit_script(spec, files, meta, fresh=mode == "force", wait=config.job.launch_wait),
        summary=f"{what} {run} ({target.nodes} node(s): {where})",
        data={"submitted": f"{what} {run}", "nodes": f"{target.nodes} node(s): {where}"},
    )
