"""A probe is data: the script that looks at a host and the parser that turns its output into a
typed observation, which a pure planner reads.

One place judges a probe's result: `observe` below. A probe that exits non-zero or times out did
not observe anything (e.g. `sudo: a password is required`), so it fails the task with the probe's
own stderr instead of being parsed as if it were a state. Probes therefore exit 0 whenever they
could look, also when what they found is "absent" or "the snippet failed" (they print that)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .model import CommandResult, FleetError

T = TypeVar("T")


class ProbeFailed(FleetError):
    """A probe could not look at the host; the message says why, in the probe's own words."""


@dataclass(frozen=True)
class Probe(Generic[T]):
    """A read-only script plus the parser of its (exit 0) output."""

    script: str
    parse: Callable[[CommandResult], T]
    path: str | None = None  # set for a file probe (filelook.file_script): a batch may look at many at once
    # The script may run in a batch's own shell instead of a subshell, sparing a fork (~0.7 ms of
    # host CPU): it never exits, reads no stdin, and leaves no variable or function behind.
    inline: bool = False


def _unparsed(result: CommandResult) -> CommandResult:
    return result


def as_probe(value: Probe[Any] | str | None) -> Probe[Any] | None:
    """A task type that still returns a bare script gets its CommandResult as the observation."""
    if value is None or isinstance(value, Probe):
        return value
    return Probe(value, _unparsed)


def observe(probe: Probe[T], result: CommandResult) -> T:
    """The observation a probe's result gives; ProbeFailed when the probe itself failed."""
    if result.timed_out:
        raise ProbeFailed("the probe timed out and was stopped; raise the task's `timeout:` if the host is slow")
    if result.exited != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        why = "; ".join(lines[:3]) if lines else result.brief()
        raise ProbeFailed(f"could not look at the host (probe exit {result.exited}): {why}")
    return probe.parse(result)
