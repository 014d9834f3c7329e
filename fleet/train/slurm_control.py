"""`fleet train --backend slurm`: the four operations through the login host's connection (the
machine fleet runs on, unless the config's `slurm.login` names an inventory host). The nodes come
from the host pattern (their `slurm_node` names) or from a partition and a node count."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from ..inventory import Inventory
from ..model import FleetError, RunOptions, RunReport
from ..playbook import Play, Playbook
from ..report import Reporter
from ..runner import Session, run_playbook
from ..task import Task
from .actions import HOST, SlurmOrder
from .config import TrainConfig
from .jobs import LOG, follow_script, tail_script
from .slurm import Target, node_names, parse_state, state_probe
from .view import HostStatus, LogPrinter, slurm_status

PROBE_TIMEOUT = 60
LOCAL = "localhost"


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


def _play(action: str, name: str, order: SlurmOrder, timeout: float) -> Playbook:
    task = Task(action, {"order": order, "host": HOST}, name=name, timeout=timeout)
    return Playbook(str(order.config.path), (Play(hosts=order.target.login, tasks=(task,), name=name,
                                                   gather_facts=False),))  # fmt: skip


def launch(
    inventory: Inventory,
    target: Target,
    config: TrainConfig,
    options: RunOptions,
    reporter: Reporter,
    *,
    mode: str = "new",
) -> RunReport:
    order = SlurmOrder(config, target, mode, uuid.uuid4().hex[:12])
    book = _play("train_slurm_submit", f"train {config.job.run_name} (slurm)", order,
                 PROBE_TIMEOUT + config.job.launch_wait)  # fmt: skip
    return run_playbook(book, inventory, options, reporter, command="train")


def collect_status(inventory: Inventory, target: Target, config: TrainConfig, options: RunOptions) -> list[HostStatus]:
    order = SlurmOrder(config, target)
    book = _play("train_slurm_status", f"status {config.job.run_name} (slurm)", order, PROBE_TIMEOUT)
    quiet = replace(options, no_lock=True)
    report = run_playbook(book, inventory, quiet, Reporter(), command="train status", keep_log=False)
    if report.interrupted:
        raise KeyboardInterrupt  # Ctrl-C: the CLI's exit 130, no half table
    host = report.hosts.get(target.login)
    found = [r.data["job"] for r in (host.results if host else []) if "job" in r.data]
    if not found:
        why = (host.unreachable or host.why) if host else None
        return [HostStatus(target.login, None, unreachable=why or "no answer")]
    return [slurm_status(found[-1])]


def stop(
    inventory: Inventory, target: Target, config: TrainConfig, options: RunOptions, reporter: Reporter
) -> RunReport:
    order = SlurmOrder(config, target)
    book = _play("train_slurm_cancel", f"stop {config.job.run_name} (slurm)", order, config.job.stop_timeout + 30)
    return run_playbook(book, inventory, options, reporter, command="train stop")


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
    paths = target.paths(config)
    with Session(inventory, options) as session:
        conn = session.connection(target.login)
        printer = LogPrinter(None, as_json, session.redactor())  # one job: no host prefix

        def _write(text: str) -> None:
            printer(target.login, text)

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
