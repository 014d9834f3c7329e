"""Ctrl-C and SIGTERM for commands that work on remote hosts. The first one stops new work and
runs the hooks (which end the remote commands) on a thread of their own, so the main thread can
print what happened and exit; a second one exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .model import Unreachable

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Unreachable):
    """A command refused or cut short because the run was interrupted. An Unreachable, so that
    every layer that lets a lost host through (the executor, facts) lets this through too."""


def _say(text: str) -> None:
    # os.write, not print: the handler may run while the main thread is inside a print.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


class Interrupt:
    """Context manager: while inside, SIGINT/SIGTERM request a stop instead of raising."""

    def __init__(self, what: str = "ending the commands running on the hosts") -> None:
        self.requested = threading.Event()
        self.what = what
        self._hooks: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self.hooks_done = threading.Event()

    def on_interrupt(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():  # only there may handlers be set
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def request(self) -> None:
        """Stop as a first Ctrl-C would (also what the signal handler calls)."""
        if self.requested.is_set():
            return
        self.requested.set()
        threading.Thread(target=self._run_hooks, name="fleet-interrupt", daemon=True).start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            _say("\nfleet: interrupted again: exiting now; commands may still run on the hosts\n")
            os._exit(EXIT_INTERRUPTED)
        _say(f"\nfleet: interrupted ({signal.Signals(signum).name}): {self.what}; press Ctrl-C again to quit now\n")
        self.request()

    def _run_hooks(self) -> None:
        for hook in self._hooks:
            with contextlib.suppress(Exception):  # one failing hook must not stop the others
                hook()
        self.hooks_done.set()
