"""What `fleet train` says: the words of each host's launch/stop result, the status table (or its
JSON records) and the log lines. The only train module that decides how results read; the
engine's reporter (fleet/report.py) prints the results and the recap."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..report import print_line, print_table
from ..sanitize import visible
from .jobs import JobState, LaunchOutcome, StopOutcome
from .slurm import Submitted


# ---- launch and stop results ---------------------------------------------------------------------
def launch_verdict(summary: str, seen: LaunchOutcome, launch_wait: int) -> tuple[bool, str]:
    """(failed, message) of a launch: a job that exited in the watch window is not `started`:
    failed (with its last words) or done."""
    attention = f"; attention {seen.attention}" if seen.attention else ""
    if seen.exit_code is not None and seen.exit_code != 0:
        lines = "\n".join(f"    {line}" for line in seen.last_words())
        return True, (
            f"the job exited with code {seen.exit_code} within {seen.waited}s of its launch; last log lines:\n{lines}"
        )
    if seen.exit_code == 0:
        return False, f"{summary}; pid {seen.pid}{attention}; it finished within {seen.waited}s"
    if seen.ready:
        return False, f"{summary}; pid {seen.pid}{attention}; first step record after {seen.waited}s"
    if launch_wait:
        return False, f"{summary}; pid {seen.pid}{attention}; running, no step record yet after {seen.waited}s"
    return False, f"{summary}; pid {seen.pid}{attention}"


def stop_verdict(outcome: StopOutcome, reason: str, *, peer: bool) -> tuple[bool, str]:
    """(failed, message) of a stop; a stop because a peer failed fails the node too."""
    if outcome.left:
        left = " ".join(map(str, outcome.left))
        return True, f"could not stop ({reason}): processes {left} still alive after SIGKILL"
    if peer:
        return True, f"stopped: {reason}"
    if not outcome.was_running:
        return False, "not running (it ended meanwhile)"
    how = f" ({len(outcome.killed)} needed SIGKILL)" if outcome.killed else ""
    return False, f"stopped; no process of the job is left{how}"


def cancel_verdict(stdout: str) -> tuple[bool, str]:
    """(failed, message) of a Slurm cancel: the job must be gone from squeue."""
    if "not-running" in stdout.split():
        return False, "not running (it ended meanwhile)"
    if stdout.split("left", 1)[-1].strip():
        return True, "the job is still listed by squeue"
    return False, "cancelled; squeue no longer lists it"


def attention_text(line: str) -> str:
    """train_grpo.py's `attention: eager (why)` line as the facts column shows it."""
    return line.removeprefix("attention: ").strip() or "unknown (no answer from train_grpo.py)"


def imports_summary(python: str, modules: Iterable[str]) -> str:
    modules = list(modules)
    return f"{python} imports {', '.join(modules)}" if modules else f"{python} is there"


def preflight_summary(data: dict[str, Any]) -> str:
    """A node that passed the multi-node preflight: what its launch will do."""
    if data.get("running"):
        return "ready: the run already runs here"
    synced = data.get("synced") or []
    return "ready to launch" + (f" (will sync {', '.join(synced)})" if synced else "")


def submit_verdict(plan: Mapping[str, Any], seen: Submitted) -> tuple[bool, str]:
    """(failed, message) of an sbatch submission that fleet watched for a while."""
    if not seen.job_id:
        return True, "sbatch gave no job id"
    summary = f"{plan['submitted']} as slurm job {seen.job_id} ({plan['nodes']})"
    if seen.state in ("failed", "cancelled"):
        lines = "\n".join(f"    {line}" for line in seen.tail[-10:])
        return True, f"{summary}: it ended {seen.slurm} within {seen.waited}s; last log lines:\n{lines}"
    if seen.state == "finished":
        return False, f"{summary}; it finished within {seen.waited}s"
    how = "first step record" if seen.ready else (seen.slurm.split()[0] if seen.slurm else "?")
    return False, f"{summary}; {how} after {seen.waited}s"


# ---- status ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostStatus:
    host: str
    state: JobState | None
    unreachable: str | None = None
    action: str | None = None  # what status did about it (stopping a run whose peer failed)
    gpu_health: tuple[str, ...] = ()  # what turned sick on the host's GPUs since the launch


def slurm_status(state: JobState) -> HostStatus:
    """A Slurm run as one row, named by its job: Slurm's state and why a failed job failed."""
    label = f"slurm:{state.meta.get('slurm_job') or '-'}"
    note = state.meta.get("slurm_state")
    if state.state == "failed" and state.exit_code is not None:
        said = [line for line in state.tail if " fleet: " not in line and any(c.isalnum() for c in line)]
        note = f"{note or ''} exit code {state.exit_code}" + (f": {said[-1]}" if said else "")
    return HostStatus(label, replace(state, procs=frozenset()), action=(note or "").strip() or None)


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
    return status_exit_code(items)


def status_exit_code(items: Iterable[HostStatus]) -> int:
    items = list(items)
    code = 0
    if any(i.state and i.state.state in ("failed", "lost") for i in items):
        code |= 2
    if any(i.state is None for i in items):
        code |= 4
    return code


# ---- logs ------------------------------------------------------------------------------------------
class LogPrinter:
    """Log lines as `host | line` text (or the bare line when `width` is None), or with --json as
    one `log_line` event each."""

    def __init__(self, width: int | None, as_json: bool = False, redactor: Any = None) -> None:
        from ..events import EventWriter

        self.width = width
        self.events = EventWriter(redactor=redactor) if as_json else None

    def __call__(self, host: str, text: str) -> None:
        for line in text.splitlines():
            if self.events:
                self.events.emit("log_line", host=host, line=line)
            elif self.width is None:
                sys.stdout.write(f"{visible(line)}\n")  # escapes shown, not obeyed
            else:
                sys.stdout.write(f"{host:<{self.width}} | {visible(line)}\n")
        sys.stdout.flush()

    def unreachable(self, host: str, why: str) -> None:
        print(f"{host}: unreachable: {why}", file=sys.stderr)
