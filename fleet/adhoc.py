"""`fleet shell PATTERN -- CMD`: one command on every selected host at once, the output grouped
by identical text (`48 hosts: ...`) and the exit codes summarised, like `clush -b`."""

from __future__ import annotations

import shlex
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .events import EventWriter
from .interrupt import Interrupt, Interrupted
from .inventory import Inventory
from .model import CommandResult, RunOptions, Unreachable
from .report import host_list, print_line
from .runner import Session, parallel


@dataclass(frozen=True)
class HostOutput:
    host: str
    result: CommandResult | None = None
    unreachable: str | None = None
    interrupted: bool = False

    @property
    def text(self) -> str:
        if self.unreachable:
            return f"unreachable: {self.unreachable}"
        if self.result is None:
            return "interrupted: stopped, or never started"
        text = self.result.stdout + (self.result.stderr if self.result.stderr else "")
        return text.rstrip("\n")

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.unreachable:
            return "unreachable"
        assert self.result is not None
        return "timed out" if self.result.timed_out else f"exit {self.result.exited}"


def command_script(words: Sequence[str]) -> str:
    """One word is a shell command line as typed (pipes, globs); several are quoted one by one."""
    return words[0] if len(words) == 1 else shlex.join(words)


def group(outputs: Mapping[str, HostOutput]) -> list[tuple[list[str], str]]:
    """Hosts with identical output together, largest group first."""
    groups: dict[str, list[str]] = defaultdict(list)
    for host, out in outputs.items():
        groups[out.text].append(host)
    return sorted(((sorted(hosts), text) for text, hosts in groups.items()), key=lambda g: (-len(g[0]), g[0]))


def outcome_summary(outputs: Mapping[str, HostOutput]) -> str:
    by_outcome: dict[str, list[str]] = defaultdict(list)
    for host, out in outputs.items():
        by_outcome[out.outcome].append(host)
    parts = []
    for outcome, hosts in sorted(by_outcome.items(), key=lambda kv: (kv[0] != "exit 0", -len(kv[1]))):
        parts.append(f"{outcome} on {len(hosts)} host(s)" + ("" if outcome == "exit 0" else f" ({host_list(hosts)})"))
    return "; ".join(parts)


def exit_code(outputs: Mapping[str, HostOutput]) -> int:
    if any(o.interrupted for o in outputs.values()):
        return 130
    code = 0
    if any(o.result is not None and not o.result.ok for o in outputs.values()):
        code |= 2
    if any(o.unreachable for o in outputs.values()):
        code |= 4
    return code


def run_shell(
    inventory: Inventory,
    hosts: list[str],
    words: Sequence[str],
    options: RunOptions,
    *,
    become: bool = False,
    become_user: str = "root",
    timeout: float | None = None,
    as_json: bool = False,
) -> int:
    script = command_script(words)
    started = time.monotonic()
    interrupt = Interrupt()
    with interrupt, Session(inventory, options) as session:
        interrupt.on_interrupt(session.interrupt)
        redactor = session.redactor()
        events = EventWriter(redactor=redactor) if as_json else None
        if events:
            events.emit("run_start", command="shell", hosts=hosts)

        def one(host: str) -> HostOutput:
            try:
                result = session.connection(host).run(script, timeout=timeout, become=become, become_user=become_user)
            except Interrupted:
                return HostOutput(host, interrupted=True)
            except Unreachable as exc:
                return HostOutput(host, unreachable=redactor.show(str(exc)))
            except Exception as exc:  # this host's own bad settings (e.g. an unknown connection type)
                return HostOutput(host, unreachable=redactor.show(str(exc)))
            masked = CommandResult(
                redactor.show(result.stdout),
                redactor.show(result.stderr),
                result.exited,
                result.duration,
                result.timed_out,
            )
            out = HostOutput(host, masked)
            if events:
                events.emit(
                    "shell_result",
                    host=host,
                    rc=masked.exited,
                    stdout=masked.stdout,
                    stderr=masked.stderr,
                    duration=round(masked.duration, 4),
                    **({"timed_out": True} if masked.timed_out else {}),
                )
            return out

        done = parallel(hosts, one, options.forks, stop=interrupt.requested)
        outputs = {h: done.get(h) or HostOutput(h, interrupted=True) for h in hosts}
    code = exit_code(outputs)
    if events:
        for out in outputs.values():
            if out.unreachable:
                events.emit("host_unreachable", host=out.host, message=out.unreachable)
            elif out.interrupted:
                events.emit("host_interrupted", host=out.host, task=None)
        events.emit(
            "run_end",
            exit_code=code,
            interrupted=code == 130,
            failed_hosts=sorted(h for h, o in outputs.items() if o.result is not None and not o.result.ok),
            unreachable_hosts=sorted(h for h, o in outputs.items() if o.unreachable),
            duration=round(time.monotonic() - started, 3),
        )
        return code
    for names, text in group(outputs):
        print_line(f"---- {len(names)} host(s): {host_list(names, shown=len(names))} ----", style="bold cyan")
        if text:
            print_line(text)
    print_line(outcome_summary(outputs), style="bold" if code == 0 else "bold red")
    return code
