"""`fleet facts`: gather facts from many hosts at once and show them as a table or JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .facts import Facts, gather_facts
from .health import errors, judge, summary
from .healthview import expected_by_host, problem_dict
from .inventory import Inventory
from .model import RunOptions, Unreachable
from .report import print_line, print_table
from .runner import Session, each_host

STACK_KEYS = ("torch", "torch_cuda", "vllm", "transformers", "trl", "flash_attn_3", "attn_impl")


def stack_signature(facts: Facts) -> tuple[Any, ...]:
    stack = facts.stack
    return tuple(stack.get(k) for k in STACK_KEYS)


def odd_stacks(all_facts: Mapping[str, Facts]) -> set[str]:
    """Hosts whose recorded stack differs from the most common one in the fleet."""
    recorded = {h: stack_signature(f) for h, f in all_facts.items() if f.stack}
    if len(recorded) < 2:
        return set()
    common, _ = Counter(recorded.values()).most_common(1)[0]
    return {h for h, sig in recorded.items() if sig != common}


def stack_text(facts: Facts) -> str:
    s = facts.stack
    if not s:
        return "-"
    parts = []
    if s.get("torch"):
        # torch's own version often carries the CUDA tag already (2.9.0.dev…+cu128): say CUDA apart
        parts.append(f"torch {s['torch']} (" + (f"CUDA {s['torch_cuda']})" if s.get("torch_cuda") else "CPU only)"))
    for key in ("vllm", "transformers", "trl"):
        if s.get(key):
            parts.append(f"{key} {s[key]}")
    if "flash_attn_3" in s:
        parts.append("FA3 " + ("ok" if s["flash_attn_3"] else "missing"))
    return ", ".join(parts) or "-"  # the attention that will run has its own column


def _gib(n: int) -> str:
    return f"{n / 2**30:.0f}G" if n else "?"


def gpu_text(facts: Facts) -> str:
    if not facts.gpus:
        return "no GPU" + (f" ({facts.gpu_error})" if facts.gpu_error else "")
    names = Counter(g.name for g in facts.gpus)
    return ", ".join(f"{n}x {name}" for name, n in names.items())


def gpu_memory_text(facts: Facts) -> str:
    if not facts.gpus:
        return "-"
    used = sum(g.memory_used_mib for g in facts.gpus)
    total = sum(g.memory_total_mib for g in facts.gpus)
    return f"{used}/{total} MiB"


def collect(
    inventory: Inventory, hosts: list[str], options: RunOptions, train_config: str | None = None
) -> tuple[dict[str, Facts | Unreachable], dict[str, str]]:
    """Every host's facts; with a training config, then (a second command, on the hosts that
    answered) the attention implementation training its model would really use there. Only then
    is fleet.train loaded (pydantic): a plain `fleet facts` stays light."""
    with Session(inventory, options) as session:
        found = each_host(session, hosts, lambda host, conn: gather_facts(conn), options.forks)
        if train_config is None:
            return found, {}
        from .train.control import attention_on

        reachable = {h: f for h, f in found.items() if isinstance(f, Facts)}
        return found, attention_on(session, reachable, train_config)


def show_facts(
    inventory: Inventory, hosts: list[str], options: RunOptions, *, as_json: bool, train_config: str | None = None
) -> int:
    expected = expected_by_host(inventory, hosts, options)
    found, attention = collect(inventory, hosts, options, train_config)
    reachable = {h: f for h, f in found.items() if isinstance(f, Facts)}
    odd = odd_stacks(reachable)
    problems = {h: judge(f.health, expected_gpus=expected[h], gpu_error=f.gpu_error) for h, f in reachable.items()}
    if as_json:
        from .events import EventWriter

        events = EventWriter()
        for h, f in found.items():
            if isinstance(f, Unreachable):
                events.emit("facts", host=h, unreachable=str(f))
                continue
            health = {"healthy": not errors(problems[h]), "health_problems": [problem_dict(p) for p in problems[h]]}
            seen = {"attention": attention[h]} if h in attention else {}
            events.emit("facts", **{**f.as_dict(), "host": h, "stack_differs": h in odd, **health, **seen})
    else:
        rows = []
        for host, f in found.items():
            if isinstance(f, Unreachable):
                rows.append((host, "unreachable", "(below)", "", "", "", "", "", "", *([""] * bool(attention)), ""))
                continue
            rows.append((
                host, f.arch, f"{f.os_id} {f.os_version}".strip(), f"{f.cpus}/{_gib(f.memory_bytes)}",
                f.driver or "-", f.cuda or "-", gpu_text(f), gpu_memory_text(f),
                ("≠ " if host in odd else "") + stack_text(f), *([attention[host]] if attention else []),
                summary(problems[host]),
            ))  # fmt: skip
        columns = ("host", "arch", "os", "cpu/mem", "driver", "cuda", "gpus", "gpu mem", "stack",
                   *(["attention"] if attention else []), "health")  # fmt: skip
        print_table(rows, columns, title=f"facts of {len(hosts)} host(s)")
        for host, f in found.items():  # whole, under the table: a column would cut the reason short
            if isinstance(f, Unreachable):
                print_line(f"{host}: unreachable: {f}", style="red")
        if odd:
            print_line(f"≠ stack differs from the rest of the fleet on: {', '.join(sorted(odd))}", style="yellow")
    return 4 if len(reachable) < len(found) else 0
