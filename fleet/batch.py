"""Many probes in one remote command, and their results taken apart again.

Each probe runs in its own subshell (its `exit` ends only itself, its exports stay its own) with
stdin closed, then a marker line carrying its exit status goes to stdout and a bare marker to
stderr. The marker holds a random nonce, so no probe output can forge one. Every marker starts
with a newline that the splitter removes again, so each probe's stdout and stderr come back byte
for byte as if it had run alone.

A probe whose end marker never came (the batch timed out, or sudo refused before anything ran)
has no result here: the caller runs it again on its own, so what it reports is exactly what an
unbatched run reports."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import OUTPUT_GAP, CommandResult

# A batch holds at most this many probes (a loop over hundreds of items is split over requests).
MAX_PROBES = 200


@dataclass(frozen=True)
class ProbeCall:
    """A probe script with the settings it runs under; equal calls give equal observations."""

    script: str
    env: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    become: bool = False
    become_user: str = "root"

    @classmethod
    def of(cls, script: str, run_kwargs: Mapping[str, Any]) -> ProbeCall:
        env = run_kwargs.get("env") or {}
        return cls(
            script,
            tuple((str(k), str(v)) for k, v in env.items()),
            run_kwargs.get("timeout"),
            bool(run_kwargs.get("become")),
            str(run_kwargs.get("become_user") or "root"),
        )

    @property
    def user(self) -> tuple[bool, str]:
        """Probes that run as the same user may share a request."""
        return (self.become, self.become_user if self.become else "")

    def run_kwargs(self) -> dict[str, Any]:
        return {
            "env": dict(self.env) or None,
            "timeout": self.timeout,
            "become": self.become,
            "become_user": self.become_user,
        }


def _exports(env: tuple[tuple[str, str], ...]) -> str:
    out = []
    for name, value in env:
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ValueError(f"{name!r} is not a valid environment variable name")
        out.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(out)


@dataclass(frozen=True)
class Batch:
    calls: tuple[ProbeCall, ...]
    nonce: str

    @classmethod
    def of(cls, calls: Sequence[ProbeCall]) -> Batch:
        return cls(tuple(calls), secrets.token_hex(8))

    @property
    def marker(self) -> str:
        return f"@@fleet-probe-{self.nonce}"

    def script(self) -> str:
        parts = []
        for call in self.calls:
            parts.append(
                f"(\n{_exports(call.env)}{call.script}\n) </dev/null\n"
                f"printf '\\n{self.marker} %s\\n' \"$?\"\n"
                f"printf '\\n{self.marker}\\n' >&2\n"
            )
        return "".join(parts)

    def run_kwargs(self) -> dict[str, Any]:
        """As the first call's user; the shortest time limit of any call (a batch that runs out of
        time leaves its unfinished probes to run alone, each with its own limit)."""
        limits = [c.timeout for c in self.calls if c.timeout]
        first = self.calls[0]
        return {"timeout": min(limits) if limits else None, "become": first.become, "become_user": first.become_user}

    def split(self, result: CommandResult) -> list[CommandResult]:
        """The results of the probes that finished, in order (fewer than the calls when the batch
        stopped early)."""
        stdout, stderr = result.stdout, result.stderr
        if result.dropped:  # the middle of a huge output was not kept: only what came before it is whole
            stdout, stderr = stdout.split(OUTPUT_GAP, 1)[0], stderr.split(OUTPUT_GAP, 1)[0]
        pieces = re.split(rf"\n{re.escape(self.marker)} (\d+)\n", stdout)
        errors = stderr.split(f"\n{self.marker}\n")
        done = []
        for index in range(min(len(pieces) // 2, len(errors) - 1, len(self.calls))):
            done.append(CommandResult(pieces[2 * index], errors[index], int(pieces[2 * index + 1])))
        return done
