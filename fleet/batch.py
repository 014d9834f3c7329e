"""Many probes in one remote command, and their results taken apart again.

Each probe runs in its own subshell (its `exit` ends only itself, its exports stay its own), or,
when it is written to allow it (Probe.inline: the facts, the creates checks, the apt probe; a look
always), in the batch's own shell without a fork; either way with stdin closed. Then a marker
line carrying its exit status goes to stdout and a bare marker to stderr. The marker holds a
random nonce, so no probe output can forge one. Every marker starts with a newline that the
splitter removes again, so each probe's stdout and stderr come back byte for byte as if it had
run alone.

A probe whose end marker never came (the batch timed out, or sudo refused before anything ran)
has no result here: the caller runs it again on its own, so what it reports is exactly what an
unbatched run reports.

File probes (a call with a `path`) are not run one by one: the batch looks at all their paths
with one look (fleet/filelook.py), which gives each the output its own script would have given.
The look reads stdout's bytes (file content need not be text); every other probe reads the text,
as it would alone. A path the look cannot answer has no result here either."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, AnyStr

from .filelook import look_outputs, look_script, lookable
from .model import OUTPUT_GAP, CommandResult
from .shell import env_name, exports

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
    path: str | None = None  # a file probe's path (its script is filelook.file_script of it)
    inline: bool = False  # it may run in the batch's own shell (fleet.probe.Probe.inline)

    @classmethod
    def of(cls, script: str, run_kwargs: Mapping[str, Any], path: str | None = None, inline: bool = False) -> ProbeCall:
        env = run_kwargs.get("env") or {}
        return cls(
            script,
            tuple((env_name(str(k)), str(v)) for k, v in env.items()),  # a bad name fails its own task
            run_kwargs.get("timeout"),
            bool(run_kwargs.get("become")),
            str(run_kwargs.get("become_user") or "root"),
            path,
            inline,
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


def _sections(calls: Sequence[ProbeCall]) -> tuple[tuple[int, ...], ...]:
    """The batch's parts, in the order they run: one look per environment that two or more file
    probes share (first), then every other call on its own, in order."""
    by_env: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for index, call in enumerate(calls):
        if call.path is not None and lookable(call.path):
            by_env.setdefault(call.env, []).append(index)
    looks = [tuple(group) for group in by_env.values() if len(group) > 1]
    in_looks = {i for group in looks for i in group}
    return (*looks, *((i,) for i in range(len(calls)) if i not in in_looks))


@dataclass(frozen=True)
class Batch:
    calls: tuple[ProbeCall, ...]
    nonce: str
    sections: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, calls: Sequence[ProbeCall]) -> Batch:
        return cls(tuple(calls), secrets.token_hex(8), _sections(calls))

    @property
    def marker(self) -> str:
        return f"@@fleet-probe-{self.nonce}"

    def script(self) -> str:
        parts = []
        for section in self.sections:
            first = self.calls[section[0]]
            body = first.script if len(section) == 1 else look_script([self.calls[i].path or "" for i in section])
            if (len(section) > 1 or first.inline) and not first.env:  # a look is always inline
                run = f"{{\n{body}\n}} </dev/null\n"  # in this shell: no fork
            else:
                run = f"(\n{exports(first.env)}{body}\n) </dev/null\n"
            parts.append(f"{run}printf '\\n{self.marker} %s\\n' \"$?\"\nprintf '\\n{self.marker}\\n' >&2\n")
        return "".join(parts)

    def run_kwargs(self) -> dict[str, Any]:
        """As the first call's user; the shortest time limit of any call (a batch that runs out of
        time leaves its unfinished probes to run alone, each with its own limit)."""
        limits = [c.timeout for c in self.calls if c.timeout]
        first = self.calls[0]
        return {
            "timeout": min(limits) if limits else None,
            "become": first.become,
            "become_user": first.become_user,
            "keep_bytes": any(len(section) > 1 for section in self.sections),  # a look reads bytes
        }

    def split(self, result: CommandResult) -> list[CommandResult | None]:
        """Each call's result, in the calls' order; None for a call the batch did not answer (it
        stopped early, or a look could not answer that path): that call runs alone."""
        stdout, stderr = result.stdout, result.stderr
        if result.dropped:  # the middle of a huge output was not kept: only what came before it is whole
            stdout, stderr = stdout.split(OUTPUT_GAP, 1)[0], stderr.split(OUTPUT_GAP, 1)[0]
        pieces = _marked(stdout, f"\n{self.marker} ")
        errors = stderr.split(f"\n{self.marker}\n")
        raw = result.stdout_bytes  # the same pieces as bytes, for the looks (None: not kept)
        raw_pieces = _marked(raw, f"\n{self.marker} ".encode()) if raw is not None else []
        done: list[CommandResult | None] = [None] * len(self.calls)
        for number in range(min(len(pieces) // 2, len(errors) - 1, len(self.sections))):
            section = self.sections[number]
            out, err, code = pieces[2 * number], errors[number], int(pieces[2 * number + 1])
            if len(section) == 1:
                done[section[0]] = CommandResult(out, err, code)
                continue
            # A look that failed answers nothing: each of its paths says why on its own.
            looked = code == 0 and len(raw_pieces) == len(pieces)
            outputs = look_outputs(raw_pieces[2 * number], len(section)) if looked else [None] * len(section)
            for index, output in zip(section, outputs, strict=True):
                done[index] = None if output is None else CommandResult(output, "", 0)
        return done


def _marked(output: AnyStr, start: AnyStr) -> list[AnyStr]:
    """`output` split at its marker lines (`start`, an exit status, a newline) as re.split with
    the status as a group splits it: [out, status, out, status, ..., rest]. Without a regular
    expression: each batch's marker is new, and compiling one cost ~1 ms a host."""
    newline = start[:1]
    pieces: list[AnyStr] = []
    taken = 0
    at = output.find(start)
    while at != -1:
        end = output.find(newline, at + len(start))
        status = output[at + len(start) : end]
        if end != -1 and status.isdigit() and status.isascii():
            pieces += [output[taken:at], status]
            taken = end + 1
            at = output.find(start, taken)
        else:  # not a whole marker line (output cut short): it stays part of the output
            at = output.find(start, at + 1)
    pieces.append(output[taken:])
    return pieces
