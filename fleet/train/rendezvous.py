"""Multi-node runs: the rendezvous every node needs, derived from the inventory, and the rule that
one dead node fails the whole run.

The first selected host (inventory order) is the master; node ranks follow inventory order. Each
node runs `python -m torch.distributed.run` (torchrun) with a static rendezvous and
`--max-restarts 0`. A host may override `master_addr` (e.g. 127.0.0.1 when two "nodes" share one
machine, or an InfiniBand address) and pin its GPUs with `cuda_visible_devices`.

Why the rule below exists: a static torchrun rendezvous does not watch the other nodes. When a rank
dies, its own node's torchrun exits at once; the other nodes only notice at their next collective
(gloo: a closed connection, at once; NCCL: at the process group's timeout, GRPOConfig.ddp_timeout),
and if a node's torchrun is killed its workers, which run in sessions of their own, go on alone.
So every `fleet train status` applies `peers_to_stop`: nodes of a run whose peer failed, was lost
or was stopped are stopped too, their stop reason naming the peer, and show as failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import FleetError
from .jobs import PEER_PREFIX, JobState

LEFTOVERS = "leftover processes of the failed job stopped"


@dataclass(frozen=True)
class Rendezvous:
    master_addr: str
    master_port: int
    nnodes: int
    node_rank: int
    nproc_per_node: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def env(self) -> dict[str, str]:
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "NODE_RANK": str(self.node_rank),
            "NNODES": str(self.nnodes),
            "WORLD_SIZE": str(self.world_size),
        }

    def torchrun(self, python: str, script: str, args: Sequence[str]) -> list[str]:
        return [
            python, "-m", "torch.distributed.run",
            "--nnodes", str(self.nnodes), "--node_rank", str(self.node_rank),
            "--master_addr", self.master_addr, "--master_port", str(self.master_port),
            "--nproc_per_node", str(self.nproc_per_node), "--max_restarts", "0",
            script, *args,
        ]  # fmt: skip


def master_address(host: str, hostvars: Mapping[str, Any]) -> str:
    return str(hostvars.get("master_addr") or hostvars.get("address") or host)


def plan_rendezvous(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], master_port: int, nproc_per_node: Mapping[str, int]
) -> dict[str, Rendezvous]:
    """One rendezvous per host: master = the first host, ranks in the given (inventory) order."""
    if not hosts:
        raise FleetError("a multi-node run needs at least one host")
    first = hosts[0]
    default_master = master_address(first, hostvars[first])
    counts = {nproc_per_node[h] for h in hosts}
    if len(counts) > 1:
        raise FleetError(f"all nodes of a run need the same nproc_per_node, got {sorted(counts)}")
    out = {}
    for rank, host in enumerate(hosts):
        port = int(hostvars[host].get("master_port") or master_port)
        addr = str(hostvars[host].get("master_addr") or default_master)
        out[host] = Rendezvous(addr, port, len(hosts), rank, nproc_per_node[host])
    return out


def peers_to_stop(states: Mapping[str, JobState]) -> dict[str, str]:
    """Hosts still running a multi-node run whose peer failed, was lost or was stopped, each with
    the stop reason to record. Unreachable hosts are not in `states`: unknown is not dead."""
    by_launch: dict[str, list[str]] = {}
    for host, state in states.items():
        launch = state.meta.get("launch_id")
        if launch and int(state.meta.get("nnodes", 1)) > 1:
            by_launch.setdefault(str(launch), []).append(host)
    out: dict[str, str] = {}
    for hosts in by_launch.values():
        dead = [h for h in hosts if states[h].state in ("failed", "lost", "stopped")]
        if not dead:
            continue
        first = dead[0]
        why = _why(states[first])
        for host in hosts:
            if states[host].state == "running":
                out[host] = f"{PEER_PREFIX}{first} {why}"
            elif states[host].leftovers:
                out[host] = LEFTOVERS if host == first else f"{PEER_PREFIX}{first} {why}"
    return out


def _why(state: JobState) -> str:
    if state.state == "failed" and state.stopped_reason:
        return "failed"
    if state.state == "failed":
        return f"failed (exit code {state.exit_code})"
    return state.state
