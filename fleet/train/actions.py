"""`fleet train` as actions of the playbook engine (fleet/executor.py): each one a typed probe of
the job's state on a host, a pure planner (plan.py) and an apply script (jobs.py), run by
control.py as plays, so train gets the engine's results, events, run logs, interrupts and
failure handling. These are not playbook task types: their arguments are objects control.py
builds (a run's node specs), and each host finds its own by `host`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict, InstanceOf

from ..facts import Facts
from ..factuse import ALL_GROUPS
from ..health import turned_sick
from ..model import CommandResult, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .config import TrainConfig
from .jobs import (
    STOPPED_BY_USER,
    Imports,
    JobState,
    NodeSpec,
    Preflight,
    RunPaths,
    imports_probe,
    parse_imports,
    parse_launch,
    parse_preflight,
    parse_state,
    parse_stop,
    preflight_probe,
    state_probe,
    stop_script,
)
from .plan import imports_failure, job_files, plan_launch
from .slurm import SlurmSeen, Target, cancel_script, observe, parse_submit, plan_submit
from .slurm import state_probe as slurm_state_probe
from .view import (
    cancel_verdict,
    imports_summary,
    launch_verdict,
    preflight_summary,
    stop_verdict,
    submit_verdict,
)

HOST = "{{ inventory_hostname }}"  # the `host` argument: each host picks its own spec


@dataclass(frozen=True)
class LaunchOrder:
    """One launch of a run: decided before any host is touched."""

    config: TrainConfig
    specs: Mapping[str, NodeSpec]
    mode: str = "new"  # new | resume | force
    ignore_health: bool = False


@dataclass(frozen=True)
class RunOrder:
    """A look at or a stop of a run: where it lives on each host."""

    config: TrainConfig
    paths: Mapping[str, RunPaths]


class _ObjectArgs(Args):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    host: str


class LaunchArgs(_ObjectArgs):
    order: InstanceOf[LaunchOrder]


class RunArgs(_ObjectArgs):
    order: InstanceOf[RunOrder]


class StopArgs(RunArgs):
    reason: str = STOPPED_BY_USER
    peer: bool = False  # stopped because a peer failed: the node's run failed too


def _facts(ctx: Context) -> Facts:
    return ctx.facts if isinstance(ctx.facts, Facts) else Facts()


@action
class TrainImports(Action):
    """The job's python on the host imports every module the job needs (a launch's first task)."""

    name = "train_imports"
    Args: ClassVar = LaunchArgs
    read_only = True

    def probe(self) -> Probe[Imports]:
        spec = self.args.order.specs[self.args.host]
        script = imports_probe(spec.paths, spec.argv[0], self.args.order.config.job.require_modules)
        return Probe(script, lambda result: parse_imports(result.stdout))

    def plan(self, imports: Imports, ctx: Context) -> Plan:
        spec = self.args.order.specs[self.args.host]
        failure = imports_failure(spec, imports)
        modules = self.args.order.config.job.require_modules
        return Plan(fail=failure) if failure else Plan(summary=imports_summary(spec.argv[0], modules))


@action
class TrainLaunch(Action):
    """Start the run's job on the host unless it runs there; never over a finished or failed run
    unless the order says resume or force."""

    name = "train_launch"
    Args: ClassVar = LaunchArgs
    facts_used = ALL_GROUPS  # the preflight judges GPUs, health and the stack from them

    @property
    def spec(self) -> NodeSpec:
        return self.args.order.specs[self.args.host]

    def probe(self) -> Probe[Preflight]:
        names = list(job_files(self.args.order.config))
        return Probe(preflight_probe(self.spec.paths, names), lambda result: parse_preflight(result.stdout, names))

    def plan(self, pre: Preflight, ctx: Context) -> Plan:
        order = self.args.order
        return plan_launch(
            self.spec, pre, _facts(ctx), order.config, ctx.vars, order.mode, ignore_health=order.ignore_health
        )

    def verdict(self, plan: Plan, result: CommandResult, ctx: Context) -> tuple[bool, str]:
        return launch_verdict(plan.summary, parse_launch(result.stdout), self.args.order.config.job.launch_wait)

    def applied(self, plan: Plan, result: CommandResult, ctx: Context) -> Mapping[str, Any]:
        seen = parse_launch(result.stdout)  # the log's lines are in the message; all of it in the run log
        data: dict[str, Any] = {"rc": result.exited, "pid": seen.pid}
        if seen.attention:
            data["note"] = f"attention {seen.attention}"  # the recap says what will really run
        return data


@action
class TrainPreflight(TrainLaunch):
    """A multi-node launch's first step on every node: the launch's own probe and planner, nothing
    applied; the barrier (plan.launch_barrier) reads what each node's plan found."""

    name = "train_preflight"
    read_only = True

    def plan(self, pre: Preflight, ctx: Context) -> Plan:
        plan = super().plan(pre, ctx)
        return plan if plan.fail else Plan(summary=preflight_summary(dict(plan.data)), data=plan.data)


class _RunAction(Action):
    """Looks at the run's job on the host (state_probe)."""

    facts_used = ALL_GROUPS  # status compares GPU health with the launch's

    def probe(self) -> Probe[JobState]:
        return Probe(state_probe(self.args.order.paths[self.args.host]), lambda result: parse_state(result.stdout))


@action
class TrainStatus(_RunAction):
    """The run's state on the host, and what turned sick on its GPUs since the launch."""

    name = "train_status"
    Args: ClassVar = RunArgs
    read_only = True

    def plan(self, state: JobState, ctx: Context) -> Plan:
        sick = tuple(turned_sick(state.meta.get("health") or {}, _facts(ctx).health))
        return Plan(summary=state.state, data={"job": state, "gpu_health": sick})


@action
class TrainStop(_RunAction):
    """End every process of the run's job on the host (TERM, then KILL) and confirm none is left."""

    name = "train_stop"
    Args: ClassVar = StopArgs

    def plan(self, state: JobState, ctx: Context) -> Plan:
        if not state.procs:
            return Plan(summary="not running")
        timeout = self.args.order.config.job.stop_timeout
        script = stop_script(self.args.order.paths[self.args.host], self.args.reason, timeout)
        return Plan(script=script, summary=f"stop ({self.args.reason})")

    def verdict(self, plan: Plan, result: CommandResult, ctx: Context) -> tuple[bool, str]:
        return stop_verdict(parse_stop(result.stdout), self.args.reason, peer=self.args.peer)

    def applied(self, plan: Plan, result: CommandResult, ctx: Context) -> Mapping[str, Any]:
        outcome = parse_stop(result.stdout)
        return {"rc": result.exited, "was_running": outcome.was_running, "left": list(outcome.left)}


# ---- Slurm: the same engine, on the login host -----------------------------------------------------
@dataclass(frozen=True)
class SlurmOrder:
    """A run submitted through Slurm: decided before the login host is touched."""

    config: TrainConfig
    target: Target
    mode: str = "new"
    launch_id: str = ""


class SlurmArgs(_ObjectArgs):
    order: InstanceOf[SlurmOrder]


class _SlurmAction(Action):
    """Looks at the run on the login host: Slurm's view of its job, its files, its checkpoints."""

    Args: ClassVar = SlurmArgs

    def probe(self) -> Probe[SlurmSeen]:
        order = self.args.order
        return Probe(slurm_state_probe(order.target.paths(order.config)), lambda result: observe(result.stdout))


@action
class SlurmSubmit(_SlurmAction):
    """sbatch the run's batch script from the login host unless the run is pending or running."""

    name = "train_slurm_submit"

    def plan(self, seen: SlurmSeen, ctx: Context) -> Plan:
        o = self.args.order
        return plan_submit(seen, o.config, o.target, job_files(o.config), o.mode, o.launch_id)

    def verdict(self, plan: Plan, result: CommandResult, ctx: Context) -> tuple[bool, str]:
        return submit_verdict(plan.data, parse_submit(result.stdout))

    def applied(self, plan: Plan, result: CommandResult, ctx: Context) -> Mapping[str, Any]:
        return {"rc": result.exited, "slurm_job": parse_submit(result.stdout).job_id}


@action
class SlurmStatus(_SlurmAction):
    """The run's state as Slurm and its exit file tell it."""

    name = "train_slurm_status"
    read_only = True

    def plan(self, seen: SlurmSeen, ctx: Context) -> Plan:
        return Plan(summary=seen.state.state, data={"job": seen.state})


@action
class SlurmCancel(_SlurmAction):
    """scancel the run's job (recording why first) and confirm Slurm no longer lists it."""

    name = "train_slurm_cancel"

    def plan(self, seen: SlurmSeen, ctx: Context) -> Plan:
        if seen.state.state not in ("pending", "running"):
            return Plan(summary="not running")
        o = self.args.order
        return Plan(script=cancel_script(o.target.paths(o.config), STOPPED_BY_USER, o.config.job.stop_timeout))

    def verdict(self, plan: Plan, result: CommandResult, ctx: Context) -> tuple[bool, str]:
        return cancel_verdict(result.stdout)
