"""`fleet health`: the GPU health of many hosts at once, fast (one short command per host), one
line per problem and a non-zero exit when any host is unfit: for cron or a Slurm
HealthCheckProgram. `fleet facts`, `fleet doctor` and `fleet train` judge the same fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from .facts import sections
from .health import PROBE, HostHealth, Problem, errors, expected_gpus, judge, parse_health
from .inventory import Inventory
from .model import FleetError, RunOptions, Unreachable
from .runner import Session, each_host
from .sanitize import visible

SCRIPT = "s() { printf '\\n@@%s\\n' \"$1\"; }\n" + PROBE + "s end\n"
EXIT_UNHEALTHY = 2
EXIT_UNREACHABLE = 4


def expected_by_host(inventory: Inventory, hosts: list[str], options: RunOptions) -> dict[str, int | None]:
    """Each host's `expected_gpus`, checked before any host is contacted."""
    out = {}
    for host in hosts:
        try:
            out[host] = expected_gpus({**inventory.host(host).vars, **options.extra_vars})
        except ValueError as exc:
            raise FleetError(f"host {host}: {exc}") from None
    return out


def read_health(conn: Any, *, plain: bool = False) -> HostHealth | None:
    """`plain`: the connection's only command (`fleet health`), so no agent is started for it."""
    return parse_health(sections(conn.run(SCRIPT, timeout=60, observe_only=True, plain=plain).stdout))


def examine(conn: Any, host: str, hostvars: Mapping[str, Any]) -> list[Problem]:
    """One host's problems through an open connection (`fleet doctor`)."""
    try:
        expected = expected_gpus(hostvars)
    except ValueError as exc:
        raise FleetError(f"host {host}: {exc}") from None
    return judge(read_health(conn), expected_gpus=expected)


def problem_dict(p: Problem) -> dict[str, Any]:
    return {k: v for k, v in asdict(p).items() if k != "fix"}


def show_health(inventory: Inventory, hosts: list[str], options: RunOptions, *, as_json: bool) -> int:
    expected = expected_by_host(inventory, hosts, options)
    with Session(inventory, options) as session:
        found = each_host(session, hosts, lambda host, conn: read_health(conn, plain=True), options.forks)
    code = 0
    out: dict[str, Any] = {}
    lines = []
    for host, health in found.items():
        if isinstance(health, Unreachable):
            code |= EXIT_UNREACHABLE
            out[host] = {"healthy": False, "unreachable": str(health)}
            lines.append(f"{host}: unreachable: {health}")
            continue
        problems = judge(health, expected_gpus=expected[host])
        bad = errors(problems)
        code |= EXIT_UNHEALTHY if bad else 0
        out[host] = {
            "healthy": not bad,
            "gpus": len(health.gpus) if health else 0,
            "problems": [problem_dict(p) for p in problems],
            "health": asdict(health) if health else None,
        }
        lines += [f"{host}: {p.text}" for p in bad]
    if as_json:
        from .events import EventWriter

        events = EventWriter()
        for host, record in out.items():
            events.emit("health", host=host, **record)
    else:
        for line in lines:
            print(visible(line))  # host output: its control characters are shown, not obeyed
        if not lines:
            gpus = sum(v.get("gpus", 0) for v in out.values())
            print(f"healthy: {len(out)} host(s), {gpus} GPU(s)")
    return code
