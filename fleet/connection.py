"""How fleet reaches a host: run a script, put a file, get a file, close.

Two implementations share one interface: SSH (paramiko) and Local (subprocess). Both talk
to a persistent agent (fleet/agent.py) on the host: one long-lived loop per host, started on one
SSH channel when first needed (and once more, lazily, for `become` through `sudo -n`), fed framed
requests on stdin and answering with framed replies. A command after the first costs one round
trip, not a new session.

When the agent is not started: a request marked `plain` (and `observe_only`) while no agent runs
on the host goes over one plain exec channel instead: a play's first look at the host (facts and
the first probe batch) and `fleet facts`, so a converged play starts no python3 on the host. The
same path serves every command on a host without python3: one session per command, the script
framed (its length on stdin) so it still runs only when whole, ended on interrupt by an
SSH signal to its process group. `observe_only` requests take no host lock (locked() says whether
one is held). This is the only module that imports paramiko.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import io
import itertools
import logging
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from . import agent as agent_source
from .agent import CHUNK, DIGEST, PREFIX, decode, encode
from .model import OUTPUT_GAP, CommandResult, Unreachable
from .shell import exports
from .shell import path as shell_path

_KILL_GRACE = 5
_EXIT_GRACE = 1.0  # how long output may trail a command's exit status (one-shot path)
_POLL = 0.5
_START_TIMEOUT = 30.0  # for an agent to say hello once its channel is open
OUTPUT_KEEP = 1024 * 1024  # bytes kept in memory of each stream's head, and as much of its tail
NO_PYTHON = 127  # the agent's start command's status when the host has no such interpreter

# The one-shot path: the script travels on stdin, so it never shows in `ps`, and it runs only once
# it has arrived whole (SSH guarantees the bytes; a controller dying mid-send is what cuts one
# short), with /dev/null as its input, so commands inside it cannot swallow the rest of it.
# - Up to BRACED_MAX bytes: as one brace group that sh reads itself. A shell parses a compound
#   command whole before running any of it, so a group cut short is a syntax error that runs
#   nothing (as a script with a syntax error runs nothing, on every path). No helper program
#   starts: on every converged play's request that spares `head` and two subshells (~1.7 ms).
# - Larger: after a line with its length, read by `head` and checked before it runs (bash reads a
#   script from a pipe a byte at a time: at 100 KiB that took 18 ms against head's 7 ms).
BRACED_MAX = 16 * 1024
_RUN_FRAMED_SCRIPT = (
    'read -r n && f=$(head -c "$n"; echo .) && f=${f%.} && [ "$(LC_ALL=C; echo "${#f}")" = "$n" ] || '
    '{ echo "fleet: the script arrived incomplete; nothing ran" >&2; exit 125; }; eval "{ $f\n}" </dev/null'
)

# Runs the agent: its source follows on stdin after a line with its length and sha256.
# The interpreter's built-in sha256 (_sha256, _sha2 from 3.12) spares the start hashlib's OpenSSL.
_BOOTSTRAP = (
    "import sys\n"
    "try:from _sha256 import sha256\n"
    "except ImportError:\n"
    " try:from _sha2 import sha256\n"
    " except ImportError:from hashlib import sha256\n"
    "i=sys.stdin.buffer;n,h=i.readline().split();s=i.read(int(n))\n"
    "sha256(s).hexdigest()==h.decode() or sys.exit('fleet agent: damaged in transit')\n"
    "exec(compile(s,'fleet-agent','exec'))"
)


class TransferFailed(Exception):
    """An upload or download the host refused (permissions, a missing folder, ...)."""


def oneshot_request(
    script: bytes, *, timeout: float | None = None, become: bool = False, become_user: str = "root"
) -> tuple[str, bytes]:
    """The one-shot command line and what it is fed on stdin: `script`, run whole or not at all,
    as the right user, within a limit (a play's first look at a host, and every command on a
    host without python3)."""
    if len(script) <= BRACED_MAX:
        # `{ ` on the script's first line keeps the line numbers sh reports the script's own.
        parts, stdin = ["sh"], b"{ " + script + b"\n} </dev/null\n"
    else:
        parts, stdin = ["sh", "-c", _RUN_FRAMED_SCRIPT], f"{len(script)}\n".encode() + script
    if timeout or become:
        # `timeout` ends its whole process group, at its limit and on a signal it gets (limit 0:
        # none). Inside sudo it runs as the become user, so it may signal every process the command
        # started; without it sudo would relay an interrupt's SIGTERM to sh only.
        limit = f"{int(max(1, timeout))}s" if timeout else "0"
        parts = ["timeout", "-k", f"{_KILL_GRACE}s", limit, *parts]
    if become:
        parts = ["sudo", "-n", "-H", "-u", become_user, "--", *parts]
    return "exec " + shlex.join(parts), stdin  # no login shell left in between


def agent_command(python: str, *, become_user: str | None = None) -> list[str]:
    """argv that starts the agent under `python` (exit 127 when the host has none)."""
    py = shlex.quote(python)
    start = f"command -v {py} >/dev/null 2>&1 || exit {NO_PYTHON}; exec {py} -I -S -c {shlex.quote(_BOOTSTRAP)}"
    argv = ["sh", "-c", start]
    if become_user is not None:
        argv = ["sudo", "-n", "-H", "-u", become_user, "--", *argv]
    return argv


def _agent_payload() -> bytes:
    source = Path(agent_source.__file__).read_bytes()
    return f"{len(source)} {hashlib.sha256(source).hexdigest()}\n".encode() + source


def with_env(script: str, env: Mapping[str, Any] | None) -> str:
    return exports(env.items()) + script if env else script


@dataclass(frozen=True)
class HostLock:
    """What a run asks of each host's agent: hold `~/.fleet/lock` for the run, waiting at most
    `wait` seconds for another run to end. `holder` says who we are to a run that has to wait."""

    run_id: str
    holder: str
    wait: float = 60.0
    path: str = "~/.fleet/lock"


class HostLocked(Unreachable):
    """Another run holds this host's lock (a host's result, not a crash)."""


class Connection(Protocol):
    host: str
    commands: int
    sessions: int  # SSH sessions (channels) opened so far: 1 per host, 2 with become, for a whole run
    # Where a command's whole output is written when more than is kept in memory (None: dropped).
    output_dir: Path | None

    def run(
        self,
        script: str,
        *,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        become: bool = False,
        become_user: str = "root",
        observe_only: bool = False,
        plain: bool = False,
        keep_bytes: bool = False,
    ) -> CommandResult: ...

    def put(
        self,
        content: bytes | str | os.PathLike[str] | BinaryIO,
        path: str,
        mode: int | None = None,
        *,
        become: bool = False,
        become_user: str = "root",
    ) -> None: ...

    def get(self, path: str) -> bytes: ...

    def locked(self) -> bool: ...

    def release_lock(self) -> None: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


# ---- output kept in memory -------------------------------------------------------------------------
class _Capture:
    """One stream of a command's output: its first and last `keep` bytes in memory, the middle
    dropped (and counted); with a spill path, the whole stream also goes to `<spill>.part`
    (owner-only, raw), which whoever keeps the run's log masks into `<spill>` (fleet.runlog)."""

    def __init__(self, keep: int, spill: Path | None, keep_bytes: bool = False) -> None:
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.spill_path = spill
        self._spill: BinaryIO | None = None

    @property
    def raw_path(self) -> Path | None:
        return spill_part(self.spill_path) if self._spill else None

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self._spill:
            self._spill.write(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * self.keep:
            if self.spill_path and not self._spill:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(spill_part(self.spill_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                self._spill = os.fdopen(fd, "wb")
                self._spill.write(self.head + self.tail)
            del self.tail[: len(self.tail) - self.keep]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def data(self) -> bytes | None:
        """The stream's bytes as they came, when asked for and none were dropped."""
        return bytes(self.head + self.tail) if self.keep_bytes and not self.dropped else None

    def discard(self) -> None:
        """The command gave no result (its connection or agent was lost): no run log will mask
        the raw spilled output, so it goes."""
        if self._spill:
            self._spill.close()
            spill_part(self.spill_path).unlink(missing_ok=True)

    def text(self, name: str) -> str:
        if self._spill:
            self._spill.close()
        del self.tail[: max(0, len(self.tail) - self.keep)]
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", "replace")
        where = f"; full output in {self.spill_path}" if self._spill else ""
        note = f"{OUTPUT_GAP}{name}: output too large: {self.dropped} bytes not kept in memory{where}]\n"
        return self.head.decode("utf-8", "replace") + note + self.tail.decode("utf-8", "replace")


@contextlib.contextmanager
def _captures(keep: int, spill: Path | None, keep_bytes: bool = False) -> Iterator[tuple[_Capture, _Capture]]:
    """A command's stdout and stderr, spilled beside `spill` when too large; what was spilled is
    discarded when the command ends in an exception (it never reaches a result or the run log).
    `keep_bytes`: stdout's bytes also come back as they were (CommandResult.stdout_bytes)."""

    def one(stream: str) -> _Capture:
        return _Capture(
            keep, spill.with_name(f"{spill.name}.{stream}") if spill else None, stream == "stdout" and keep_bytes
        )

    out, err = one("stdout"), one("stderr")
    try:
        yield out, err
    except BaseException:
        out.discard()
        err.discard()
        raise


def spill_part(path: Path) -> Path:
    """Where a spilled stream is written raw until the run log masks it into `path`."""
    return path.with_name(path.name + ".part")


# ---- the controller side of an agent ------------------------------------------------------------------
class _AgentLost(Exception):
    def __init__(self, sent: bool, detail: str = "") -> None:
        super().__init__(detail)
        self.sent = sent  # whether a request was already on its way (it may have run)


class _Stream(Protocol):
    def write(self, data: bytes) -> None: ...
    def read(self, size: int, deadline: float | None) -> bytes: ...  # b"" at the end
    def ended(self) -> bool: ...
    def failure(self) -> tuple[int | None, str]: ...  # exit status and stderr once ended
    def close(self) -> None: ...


class AgentClient:
    """Frames to and from one running agent. One request at a time; interrupt() may come from
    any thread while a request waits."""

    def __init__(self, stream: _Stream, where: str) -> None:
        self.stream = stream
        self.where = where
        self.pid: int | None = None
        self._ids = itertools.count(1)
        self._request = threading.Lock()
        self._send_lock = threading.Lock()

    def hello(self) -> bool:
        """Send the agent its source and wait for it to greet; False if it ended first."""
        try:
            self.stream.write(_agent_payload())
            head, _ = self._frame(time.monotonic() + _START_TIMEOUT)
        except (_AgentLost, TimeoutError):
            return False
        self.pid = head.get("pid")
        return head.get("op") == "hello"

    def _send(self, header: dict[str, Any], body: bytes = b"", *, sent: bool = False) -> None:
        data = encode(header, body)
        with self._send_lock:
            try:
                self.stream.write(data)
            except (OSError, EOFError) as exc:
                raise _AgentLost(sent, str(exc)) from None

    def _read_exact(self, size: int, deadline: float | None) -> bytes:
        parts, got = [], 0
        while got < size:
            data = self.stream.read(min(size - got, 1 << 20), deadline)
            if not data:
                raise _AgentLost(True)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def _frame(self, deadline: float | None) -> tuple[dict[str, Any], bytes]:
        hlen, blen = PREFIX.unpack(self._read_exact(PREFIX.size, deadline))
        rest = self._read_exact(hlen + blen + DIGEST, deadline)
        head, body = rest[:hlen], rest[hlen : hlen + blen]
        if hashlib.sha256(head + body).digest() != rest[hlen + blen :]:
            raise _AgentLost(True, "a reply failed its checksum")
        return decode(head), body

    def _reply(self, rid: int, deadline: float | None) -> tuple[dict[str, Any], bytes]:
        while True:
            head, body = self._frame(deadline)
            if head.get("id") == rid:
                return head, body

    def run(
        self,
        script: bytes,
        timeout: float | None,
        keep: int,
        spill: Path | None,
        lock: HostLock | None = None,
        keep_bytes: bool = False,
    ) -> CommandResult:
        if self.stream.ended():
            raise _AgentLost(False)
        rid = next(self._ids)
        started = time.monotonic()
        # The agent enforces the limit; this only guards against a host that stopped answering.
        deadline = started + timeout + 2 * _KILL_GRACE + 10 if timeout else None
        with _captures(keep, spill, keep_bytes) as (out, err):
            return self._run(rid, script, timeout, deadline, out, err, lock)

    def _run(
        self,
        rid: int,
        script: bytes,
        timeout: float | None,
        deadline: float | None,
        out: _Capture,
        err: _Capture,
        lock: HostLock | None,
    ) -> CommandResult:
        begun = False
        with self._request:
            request: dict[str, Any] = {"op": "run", "id": rid, "timeout": timeout}
            if lock is not None:  # take the host lock first, in the same round trip
                request |= {"lock_path": lock.path, "lock_wait": lock.wait, "lock_run": lock.run_id,
                            "lock_holder": lock.holder}  # fmt: skip
                deadline = None if deadline is None else deadline + lock.wait
            self._send(request, script)
            while True:
                try:
                    head, body = self._reply(rid, deadline)
                except _AgentLost as lost:
                    raise _AgentLost(begun, str(lost)) from None  # not begun: it never ran, it may be sent again
                except TimeoutError:
                    self.stream.close()  # a stuck agent: the next command starts a new one
                    spilled = tuple(str(c.raw_path) for c in (out, err) if c.raw_path)
                    stdout, stderr = out.text("stdout"), err.text("stderr")
                    return CommandResult(
                        stdout, stderr, 124, timeout or 0.0, timed_out=True, spilled=spilled, stdout_bytes=out.data()
                    )
                if head["op"] == "started":
                    begun = True
                elif head["op"] == "locked" and lock is not None:
                    raise HostLocked(_locked_message(head.get("holder", ""), lock))
                elif head["op"] == "error" and lock is not None:
                    raise Unreachable(f"cannot take the host lock {lock.path} on {self.where}: {head.get('message')}")
                elif head["op"] == "out":
                    (out if head["stream"] == "stdout" else err).add(body)
                elif head["op"] == "done":
                    if head.get("error"):
                        err.add(f"fleet agent: {head['error']}\n".encode())
                    return CommandResult(
                        out.text("stdout"),
                        err.text("stderr"),
                        int(head["exit"]),
                        float(head.get("duration") or 0.0),
                        timed_out=bool(head.get("timed_out")),
                        interrupted=bool(head.get("interrupted")),
                        dropped=out.dropped + err.dropped,
                        spilled=tuple(str(c.raw_path) for c in (out, err) if c.raw_path),
                        stdout_bytes=out.data(),
                    )

    def put(self, chunks: Iterator[bytes], path: str, mode: int | None) -> None:
        if self.stream.ended():
            raise _AgentLost(False)
        rid = next(self._ids)
        digest = hashlib.sha256()
        with self._request:
            self._send({"op": "put", "id": rid, "path": path, "mode": mode})
            for chunk in chunks:
                digest.update(chunk)
                self._send({"op": "data", "id": rid}, chunk, sent=True)
            self._send({"op": "end", "id": rid, "sha256": digest.hexdigest()}, sent=True)
            head, _ = self._reply(rid, None)
        if head["op"] != "ok":
            raise TransferFailed(head.get("message") or "upload failed")

    def get(self, path: str) -> bytes:
        if self.stream.ended():
            raise _AgentLost(False)
        rid = next(self._ids)
        parts, digest = [], hashlib.sha256()
        with self._request:
            self._send({"op": "get", "id": rid, "path": path})
            while True:
                head, body = self._reply(rid, None)
                if head["op"] == "data":
                    parts.append(body)
                    digest.update(body)
                elif head["op"] == "end":
                    break
                else:
                    raise TransferFailed(head.get("message") or "download failed")
        if digest.hexdigest() != head.get("sha256"):
            raise TransferFailed(f"{path} arrived damaged (checksum differs)")
        return b"".join(parts)

    def lock(self, lock: HostLock) -> None:
        rid = next(self._ids)
        with self._request:
            self._send({"op": "lock", "id": rid, "path": lock.path, "wait": lock.wait, "run": lock.run_id,
                        "holder": lock.holder})  # fmt: skip
            head, _ = self._reply(rid, time.monotonic() + lock.wait + _START_TIMEOUT)
        if head["op"] == "locked":
            raise HostLocked(_locked_message(head.get("holder", ""), lock))
        if head["op"] != "ok":
            raise Unreachable(f"cannot take the host lock {lock.path}: {head.get('message')}")

    def unlock(self) -> None:
        with contextlib.suppress(_AgentLost):
            self._send({"op": "unlock"})

    def interrupt(self) -> None:
        with contextlib.suppress(_AgentLost):
            self._send({"op": "interrupt"})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.close()


def _locked_message(holder_text: str, lock: HostLock) -> str:
    holder = holder_text.strip().splitlines()
    who = f"{holder[0]} ({holder[1]})" if len(holder) > 1 else (holder[0] if holder else "another run")
    return f"locked by {who}; waited {lock.wait:g}s. Wait for that run to end, or pass --no-lock if you are sure"


def _chunks(content: bytes | str | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
    """The content of an upload, CHUNK bytes at a time; a local file is never read whole."""
    if isinstance(content, bytes | bytearray | memoryview):
        view = memoryview(content)
        for i in range(0, len(view), CHUNK):
            yield bytes(view[i : i + CHUNK])
        return
    if isinstance(content, str | os.PathLike):
        with open(content, "rb") as fh:
            yield from _chunks(fh)
        return
    while True:
        chunk = content.read(CHUNK)
        if not chunk:
            return
        yield chunk


# ---- what both connections share: agents per user, reconnect once, the one-shot fallback --------------
class _AgentHost:
    """Agents on one host, keyed by the user they run as (None: the login user)."""

    host: str
    lock: HostLock | None

    def __init__(self) -> None:
        self.commands = 0
        self.sessions = 0
        self.output_keep = OUTPUT_KEEP
        # Where a command's whole output goes when more than is kept in memory (set by whoever
        # keeps the run's log, e.g. ~/.fleet/runs/<run-id>/output); None: the middle is dropped.
        self.output_dir: Path | None = None
        self.mode = "agent"  # or "one-shot" once the host turned out to have no python3
        self._lock_held = False  # whether this connection holds the host lock now
        self._agents: dict[str | None, AgentClient] = {}
        self._agents_lock = threading.Lock()

    # to be provided
    def _spawn(self, argv: list[str]) -> _Stream: ...
    def _where(self) -> str: ...
    def _lost(self) -> bool:
        """Whether the link to the host itself is gone (not merely an agent)."""
        return False

    def _reopen(self) -> None: ...
    def _run_oneshot(
        self, script: bytes, timeout: float | None, become: bool, user: str, keep_bytes: bool = False
    ) -> CommandResult: ...
    def _get_oneshot(self, path: str) -> bytes: ...
    def _hold_lock_without_agent(self, lock: HostLock) -> None: ...
    def _python(self) -> str: ...

    def _become_key(self, become: bool, become_user: str) -> str | None:
        return become_user if become else None

    plain_reads = False  # whether a request may go over a plain exec channel (SSH: yes; local: no)

    def _plain_read(self) -> bool:
        """Whether a `plain` request skips the agent: while none runs on this host (and always on
        a host without python3)."""
        return self.plain_reads and (self.mode == "one-shot" or not self._agents)

    def locked(self) -> bool:
        """Whether what runs now runs under the host lock: this connection holds it, or has none
        to take (--no-lock, or a command that does not lock hosts)."""
        return self.lock is None or self._lock_held

    def _agent(self, user: str | None) -> AgentClient | CommandResult | None:
        """The agent for `user`, started on first use; None on a host without python3 (use the
        one-shot path); a failed CommandResult when sudo refused to start it."""
        with self._agents_lock:
            if self.mode == "one-shot":
                return None
            agent = self._agents.get(user)
            if agent is not None and not agent.stream.ended():
                return agent
            if agent is not None:
                self._forget(user)
            if self._lost():
                self._reopen()
            return self._start(user)

    def _forget(self, user: str | None) -> AgentClient | None:
        """Drop a dead agent; the login agent's death also ended its hold on the host lock."""
        agent = self._agents.pop(user, None)
        if agent is not None:
            agent.close()
        if user is None:
            self._lock_held = False
        return agent

    def _wanted_lock(self) -> HostLock | None:
        return self.lock if self.lock is not None and not self._lock_held else None

    def _ensure_lock(self) -> None:
        """Take the host lock now, as its own request (the login agent holds it, whichever
        user the next request runs as; a host without python3 holds it with a session)."""
        lock = self._wanted_lock()
        if lock is None:
            return
        agent = self._agent(None)
        if agent is None:
            self._hold_lock_without_agent(lock)
        elif isinstance(agent, AgentClient):
            try:
                agent.lock(lock)
            except _AgentLost:
                raise Unreachable(f"connection to {self._where()} lost while taking the host lock") from None
        self._lock_held = True

    def release_lock(self) -> None:
        """Let other runs have this host (the runner calls it when the host finished a play)."""
        if not self._lock_held:
            return
        self._lock_held = False
        agent = self._agents.get(None)
        if agent is not None:
            agent.unlock()
        self._release_lock_session()

    def _release_lock_session(self) -> None:
        pass

    def _start(self, user: str | None) -> AgentClient | CommandResult | None:
        stream = self._spawn(agent_command(self._python(), become_user=user))
        self.sessions += 1
        agent = AgentClient(stream, self._where())
        if not agent.hello():
            code, err = stream.failure()
            stream.close()
            if code == NO_PYTHON:
                self.mode = "one-shot"
                return None
            if user is None:
                raise Unreachable(f"the fleet agent did not start on {self._where()}: {err.strip() or code}")
            return CommandResult("", err, code if code else 1)  # e.g. sudo: a password is required
        self._agents[user] = agent
        return agent

    def _agent_or_fail(self, user: str | None) -> AgentClient | None:
        agent = self._agent(user)
        if isinstance(agent, CommandResult):
            raise TransferFailed(agent.brief())
        return agent

    def _dead(self, user: str | None, lost: _AgentLost, doing: str) -> Unreachable:
        with self._agents_lock:
            agent = self._forget(user)
        detail = ""
        if agent is not None:
            _, err = agent.stream.failure()
            detail = err.strip().splitlines()[-1] if err.strip() else ""
        if self._lost() or not detail:
            return Unreachable(f"connection to {self._where()} lost while {doing}")
        return Unreachable(f"the fleet agent on {self._where()} ended while {doing}: {detail}")

    def _spill(self) -> Path | None:
        if self.output_dir is None:
            return None
        return Path(self.output_dir) / f"{re.sub(r'[^A-Za-z0-9._@-]', '_', self.host)}.{self.commands}"

    def run(
        self,
        script: str,
        *,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        become: bool = False,
        become_user: str = "root",
        observe_only: bool = False,
        plain: bool = False,
        keep_bytes: bool = False,
    ) -> CommandResult:
        """Run a script on the host.

        `observe_only`: the script only looks (probes, facts), so it takes no host lock; whoever
        changes the host from what it saw must look again once locked() (fleet.executor does).
        `plain` (with observe_only): while no agent runs on this host, it goes over one plain
        exec channel and starts none: a play's first look at a host, `fleet facts`.
        `keep_bytes`: stdout's bytes come back too, as they came (CommandResult.stdout_bytes), for
        output that is not text: a look at files (fleet/filelook.py)."""
        self.commands += 1
        user = self._become_key(become, become_user)
        text = with_env(script, env).encode()
        if plain and observe_only and self._plain_read():
            return self._run_oneshot(text, timeout, become, become_user, keep_bytes)
        for attempt in (1, 2):  # an agent found dead before the request went out is restarted once
            agent = self._agent(user)
            if agent is None:
                if not observe_only:
                    self._ensure_lock()
                return self._run_oneshot(text, timeout, become, become_user, keep_bytes)
            if isinstance(agent, CommandResult):
                return agent
            lock = None if observe_only else self._wanted_lock()
            if lock is not None and user is not None:
                self._ensure_lock()  # held by the login agent, not this one
                lock = None
            try:
                result = agent.run(text, timeout, self.output_keep, self._spill(), lock, keep_bytes)
                if lock is not None:
                    self._lock_held = True
                return result
            except _AgentLost as lost:
                error = self._dead(user, lost, "running a command")
                if lost.sent or attempt == 2:
                    raise error from None
        raise AssertionError("unreachable")

    def put(
        self,
        content: bytes | str | os.PathLike[str] | BinaryIO,
        path: str,
        mode: int | None = None,
        *,
        become: bool = False,
        become_user: str = "root",
    ) -> None:
        """Write `path` atomically (a temp file beside it, renamed once whole and checked), the
        content streamed from bytes, a local file's path or an open binary file. With no mode, an
        existing file keeps its mode and a new one gets 0644. Raises TransferFailed with the
        host's reason."""
        self._ensure_lock()
        user = self._become_key(become, become_user)
        agent = self._agent_or_fail(user)
        if agent is None:  # no agent on this host: the old way, the content inside a script
            from .shell import write_file

            data = content if isinstance(content, bytes) else b"".join(_chunks(content))
            result = self._run_oneshot(write_file(path, data, mode).encode(), None, become, become_user)
            if not result.ok:
                raise TransferFailed(result.brief())
            return
        try:
            agent.put(_chunks(content), path, mode)
        except _AgentLost as lost:
            raise self._dead(user, lost, "uploading a file") from None

    def get(self, path: str) -> bytes:
        agent = self._agent_or_fail(None)
        if agent is None:
            return self._get_oneshot(path)
        try:
            return agent.get(path)
        except _AgentLost as lost:
            raise self._dead(None, lost, "downloading a file") from None

    def interrupt(self) -> None:
        """Stop every command running on this host now, with its whole process tree (each agent
        sends SIGTERM, then SIGKILL a second later). Safe to call from any thread."""
        for agent in list(self._agents.values()):
            agent.interrupt()

    def close(self) -> None:
        """End the agents (each stops what still runs and removes its temp files on EOF)."""
        with self._agents_lock:
            agents = list(self._agents.values())
            self._agents.clear()
            self._lock_held = False  # the login agent's end releases it
        for agent in agents:
            agent.close()


# ---- local --------------------------------------------------------------------------------------------
class _PipeStream:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, size: int, deadline: float | None) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        return os.read(fd, size)

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def failure(self) -> tuple[int | None, str]:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        err = b""
        if self.proc.stderr is not None and select.select([self.proc.stderr], [], [], 0)[0]:
            err = os.read(self.proc.stderr.fileno(), 65536)
        return code, err.decode("utf-8", "replace")

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                pipe.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(0.2)  # it exits on EOF; if it is still tidying up, it finishes alone


class LocalConnection(_AgentHost):
    """This machine, through the same agent run as a subprocess: same interface, no SSH."""

    def __init__(self, host: str = "localhost", *, lock: HostLock | None = None) -> None:
        super().__init__()
        self.host = host
        self.lock = lock

    def _where(self) -> str:
        return self.host

    def _python(self) -> str:
        return sys.executable

    def _become_key(self, become: bool, become_user: str) -> str | None:
        if become and (os.geteuid() != 0 or become_user != "root"):
            return become_user
        return None

    def _spawn(self, argv: list[str]) -> _Stream:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        return _PipeStream(proc)

    def _get_oneshot(self, path: str) -> bytes:
        raise AssertionError("the local agent runs under this very python")

    def _run_oneshot(
        self, script: bytes, timeout: float | None, become: bool, user: str, keep_bytes: bool = False
    ) -> CommandResult:
        raise AssertionError("the local agent runs under this very python")


# ---- SSH ------------------------------------------------------------------------------------------------
class _ChannelStream:
    def __init__(self, chan: Any) -> None:
        self.chan = chan

    def write(self, data: bytes) -> None:
        self.chan.sendall(data)

    def read(self, size: int, deadline: float | None) -> bytes:
        self.chan.settimeout(None if deadline is None else max(0.01, deadline - time.monotonic()))
        try:
            return self.chan.recv(size)
        except TimeoutError:
            raise
        except OSError:
            return b""

    def ended(self) -> bool:
        c = self.chan
        return c.closed or c.eof_received or c.exit_status_ready() or not c.get_transport().is_active()

    def failure(self) -> tuple[int | None, str]:
        self.chan.status_event.wait(5)
        code = self.chan.exit_status if self.chan.exit_status_ready() else None
        err = bytearray()
        with contextlib.suppress(Exception):
            while self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(65536)
        return (None if code == -1 else code), err.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.close()


@dataclass(frozen=True)
class SSHOptions:
    address: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    password: str | None = None
    connect_timeout: float = 10.0
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_keys: bool = False
    ssh_config: str | None = None  # None: ~/.ssh/config; "" disables it
    python: str = "python3"  # the host's interpreter for the agent; "none": one session per command


_known_hosts_lock = threading.Lock()
# paramiko logs a transport's failure from its own thread; fleet reports it once, as Unreachable.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_parsed_known_hosts: dict[str, tuple[tuple[int, int], Any]] = {}  # path -> ((mtime, size), HostKeys)


def _hostkey_name(host: str, port: int | None) -> str:
    """How paramiko names a host in known_hosts."""
    return f"[{host}]:{port}" if port and port != 22 else host


def fingerprint(key: Any) -> str:
    """A host key's fingerprint as OpenSSH prints it: SHA256:<base64 without padding>."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_keys(known_hosts: Path, host: str, port: int | None) -> Mapping[str, Any]:
    """The keys known_hosts holds for one host, key type -> key. The file is parsed once per run,
    not once per host: paramiko decodes every key of every line, and 50 hosts each parsing a
    50-line file cost seconds of CPU."""
    paramiko = _paramiko()

    try:
        stat = known_hosts.stat()
    except OSError:
        return {}
    version = (stat.st_mtime_ns, stat.st_size)
    with _known_hosts_lock:  # also held while --accept-new-host-keys appends to the file
        seen, parsed = _parsed_known_hosts.get(str(known_hosts), (None, None))
        if seen != version:
            parsed = paramiko.HostKeys(str(known_hosts))
            _parsed_known_hosts[str(known_hosts)] = (version, parsed)
    return dict(parsed.lookup(_hostkey_name(host, port)) or {})


def remember_host_key(known_hosts: Path, hostname: str, key: Any) -> None:
    """Append a first-seen host key to known_hosts, once, even with several fleet processes at
    once: the file is locked (flock) across processes and re-read under the lock. A different key
    that another process recorded meanwhile is refused like any changed key."""
    paramiko = _paramiko()

    with _known_hosts_lock:
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with known_hosts.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            keys = paramiko.HostKeys()
            for line in fh.read().splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                if entry is not None:
                    for name in entry.hostnames:
                        keys.add(name, entry.key.get_name(), entry.key)
            recorded = (keys.lookup(hostname) or {}).get(key.get_name())
            if recorded is not None and recorded != key:
                raise paramiko.BadHostKeyException(hostname, key, recorded)
            if recorded is None:
                fh.seek(0, os.SEEK_END)
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
                fh.flush()


def _host_key_policy(accept_new: bool, known_hosts: Path) -> Any:
    paramiko = _paramiko()

    if not accept_new:
        return paramiko.RejectPolicy()

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """Trust a host's key on first contact and remember it; a changed key is still refused
        (paramiko raises BadHostKeyException before asking a policy)."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            remember_host_key(known_hosts, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return AcceptNew()


class SSHConnection(_AgentHost):
    """One paramiko transport for the whole run; on it one channel per agent (the login user's,
    and one per become user), or one per command on a host without python3; a play's first look
    at the host (and `fleet facts`) is one plain exec channel, no agent."""

    plain_reads = True

    def __init__(self, host: str, options: SSHOptions, *, lock: HostLock | None = None) -> None:
        super().__init__()
        self.host = host
        self.options = options
        self.lock = lock
        self._conn: Any = None
        self._oneshot_channels: set[Any] = set()
        self._interrupted_channels: set[Any] = set()
        self._lock_channel: Any = None
        if options.python.lower() == "none":
            self.mode = "one-shot"

    def _target(self) -> str:
        o = self.options
        return f"{o.address}:{o.port}" if o.port else o.address

    _where = _target

    def _python(self) -> str:
        return self.options.python

    def _lost(self) -> bool:
        return self._conn is not None and not self._conn.transport.is_active()

    def _reopen(self) -> None:
        _close_hops(self._conn)
        self._conn = None
        self.open()

    def _spawn(self, argv: list[str]) -> _Stream:
        self.open()
        try:
            chan = self._conn.transport.open_session(timeout=self.options.connect_timeout)
            chan.exec_command(shlex.join(argv))
        except Exception as exc:
            if isinstance(exc, OSError | EOFError) or type(exc).__module__.startswith("paramiko"):
                raise Unreachable(f"connection to {self._target()} lost: {exc or type(exc).__name__}") from None
            raise
        return _ChannelStream(chan)

    def open(self) -> None:
        if self._conn is not None:
            return
        paramiko = _paramiko()
        o = self.options
        connect_kwargs: dict[str, Any] = {"banner_timeout": o.connect_timeout, "auth_timeout": o.connect_timeout}
        if o.key:
            connect_kwargs["key_filename"] = [os.path.expanduser(o.key)]
        if o.password:
            connect_kwargs["password"] = o.password
        timeout = max(1.0, o.connect_timeout)
        conn = _route(o.address, o.user, o.port, _ssh_config(o.ssh_config), connect_kwargs, timeout)
        known_hosts = Path(os.path.expanduser(o.known_hosts))
        for hop in _hops(conn):  # the ProxyJump chain checks host keys too
            hop.client.set_missing_host_key_policy(_host_key_policy(o.accept_new_host_keys, known_hosts))
            for kind, key in _known_keys(known_hosts, hop.host, hop.port).items():
                hop.client.get_host_keys().add(_hostkey_name(hop.host, hop.port), kind, key)
        route = self._target() + "".join(f" via {h.host}:{h.port}" for h in _hops(conn.gateway))
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            _close_hops(conn)
            port = next((h.port for h in _hops(conn) if h.host == exc.hostname), 22)  # maybe a jump host's
            shown = f"[{exc.hostname}]:{port}" if port != 22 and not exc.hostname.startswith("[") else exc.hostname
            raise Unreachable(
                f"host key for {shown} has CHANGED (got {exc.key.get_name()} {fingerprint(exc.key)}); "
                f"refusing to connect. If the host was "
                f"reinstalled, remove the old key: ssh-keygen -R '{shown}' -f {o.known_hosts}"
            ) from None
        except paramiko.SSHException as exc:
            _close_hops(conn)
            text = str(exc)
            unknown = re.search(r"Server '(.+)' not found in known_hosts", text)
            if unknown:
                raise Unreachable(
                    f"{unknown.group(1)} is not in {o.known_hosts}; verify and add its key "
                    "(ssh-keyscan), or pass --accept-new-host-keys to trust it on first contact"
                ) from None
            if "banner" in text or text == "No existing session":
                raise Unreachable(
                    f"{route} took the connection but no SSH server answered within {o.connect_timeout:g}s"
                ) from None
            raise Unreachable(f"ssh to {route} failed: {text or type(exc).__name__}") from None
        except (OSError, EOFError) as exc:
            _close_hops(conn)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            if isinstance(exc, OSError) and exc.filename:  # e.g. the key file named by `key:`
                reason += f": {exc.filename}"
            raise Unreachable(f"cannot connect to {route}: {reason}") from None
        for hop in _hops(conn):  # behind a ProxyJump, the jump host's socket carries the commands
            if isinstance(hop.transport.sock, socket.socket):
                # Without this each small command waits ~40 ms for delayed ACKs (Nagle).
                hop.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hop.transport.set_keepalive(15)
        self._conn = conn

    # ---- the one-shot path: a play's first look, and hosts without python3 ------------------------
    def _run_oneshot(
        self, script: bytes, timeout: float | None, become: bool, user: str, keep_bytes: bool = False
    ) -> CommandResult:
        self.open()
        started = time.monotonic()
        with _captures(self.output_keep, self._spill(), keep_bytes) as (out, err):
            return self._oneshot(script, timeout, become, user, started, out, err)

    def _oneshot(
        self,
        script: bytes,
        timeout: float | None,
        become: bool,
        user: str,
        started: float,
        out: _Capture,
        err: _Capture,
    ) -> CommandResult:
        try:
            chan = self._conn.transport.open_session(timeout=self.options.connect_timeout)
            self.sessions += 1
            self._oneshot_channels.add(chan)
            command, stdin = oneshot_request(script, timeout=timeout, become=become, become_user=user)
            chan.exec_command(command)
            try:
                chan.sendall(stdin)
                chan.shutdown_write()
            except OSError:  # it ended before reading its whole script (e.g. sudo refused): its output says why
                if not self._conn.transport.is_active():
                    raise
            self._drain(chan, started + timeout + 2 * _KILL_GRACE if timeout else None, out, err)
            code = chan.recv_exit_status()
            chan.close()
        except (OSError, EOFError) as exc:
            raise Unreachable(f"connection to {self._target()} lost: {exc or type(exc).__name__}") from None
        except Exception as exc:  # paramiko.SSHException and friends
            if type(exc).__module__.startswith("paramiko"):
                raise Unreachable(f"connection to {self._target()} lost: {exc}") from None
            raise
        finally:
            self._oneshot_channels.discard(locals().get("chan"))
        interrupted = chan in self._interrupted_channels
        self._interrupted_channels.discard(chan)
        if interrupted:
            code = 128 + 15 if code == -1 else code  # ended by the interrupt's SIGTERM, as a shell says it
        elif code == -1:  # no exit status: we gave up at the deadline, a signal ended it, or the link died
            if not self._conn.transport.is_active():
                raise Unreachable(f"connection to {self._target()} lost while running a command")
            code = 124 if timeout else 255
        # `timeout` exits 124 when it stopped the command, 137 when it had to kill it.
        return CommandResult(
            out.text("stdout"),
            err.text("stderr"),
            code,
            time.monotonic() - started,
            timed_out=bool(timeout) and code in (124, 137) and not interrupted,
            interrupted=interrupted,
            dropped=out.dropped + err.dropped,
            spilled=tuple(str(c.raw_path) for c in (out, err) if c.raw_path),
            stdout_bytes=out.data(),
        )

    def _hold_lock_without_agent(self, lock: HostLock) -> None:
        """The host lock on a host without python3: flock(1) on the same file, held by a session
        that waits for its stdin to end (so it is released however the run ends)."""
        self.open()
        path, mine = shell_path(lock.path), shlex.quote("run " + lock.run_id)
        script = (
            f'mkdir -p -- "$(dirname -- {path})" && exec 9<>{path} || exit 70\n'
            f"end=$(( $(date +%s) + {int(lock.wait)} ))\n"
            "while ! flock -n 9; do\n"
            f'  [ "$(head -n1 {path})" = {mine} ] && {{ echo shared; exec cat >/dev/null; }}\n'
            f'  [ "$(date +%s)" -ge "$end" ] && {{ cat {path} >&2; exit 75; }}\n'
            "  sleep 0.2\n"
            "done\n"
            f"printf 'run %s\\n%s\\n' {shlex.quote(lock.run_id)} {shlex.quote(lock.holder)} >{path}\n"
            "echo locked; exec cat >/dev/null\n"
        )
        chan = self._conn.transport.open_session(timeout=self.options.connect_timeout)
        self.sessions += 1
        chan.exec_command(shlex.join(["sh", "-c", script]))
        stream = _ChannelStream(chan)
        try:
            line = stream.read(64, time.monotonic() + lock.wait + _START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() in (b"locked", b"shared"):
            self._lock_channel = chan
            return
        code, err = stream.failure()
        stream.close()
        if code == 75:
            raise HostLocked(_locked_message(err, lock))
        raise Unreachable(f"cannot take the host lock {lock.path} on {self._target()}: {err.strip() or code}")

    def _get_oneshot(self, path: str) -> bytes:
        self.open()
        buf = io.BytesIO()
        if path.startswith("~/"):
            path = path[2:]  # SFTP starts in the login user's home
        try:
            self.sessions += 1
            self._conn.sftp().getfo(path, buf)
        except OSError as exc:
            raise TransferFailed(f"{exc.strerror or exc}: {path}") from None
        return buf.getvalue()

    def _drain(self, chan: Any, deadline: float | None, out: _Capture, err: _Capture) -> None:
        """stdout and stderr until EOF; or until the deadline; or shortly after the command
        exited, since a background process it left behind may hold its output open for good.
        Capped in memory and spilled whole as on the agent path."""
        exited = False
        while True:
            done = chan.eof_received or chan.closed  # read before draining: data sent before is buffered
            while chan.recv_ready():
                out.add(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.add(chan.recv_stderr(65536))
            if done:
                break
            if not exited and chan.exit_status_ready():
                exited = True
                grace = time.monotonic() + _EXIT_GRACE
                deadline = grace if deadline is None else min(deadline, grace)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                chan.close()  # the remote `timeout` should have ended it by now: stop waiting
                break
            # An exit status wakes no file descriptor, so look for it now and then.
            select.select([chan], [], [], _POLL if left is None else min(left, _POLL))

    def interrupt(self) -> None:
        """As the agents do, and for a one-shot command: SIGTERM through SSH (sshd signals the
        session's process group; under sudo, `timeout` passes it on to its whole group), then the
        channel is closed so that nothing waits for it."""
        super().interrupt()
        for chan in list(self._oneshot_channels):
            self._interrupted_channels.add(chan)
            with contextlib.suppress(Exception):
                _signal(chan, "TERM")
            with contextlib.suppress(Exception):
                chan.close()

    def _release_lock_session(self) -> None:
        if self._lock_channel is not None:
            with contextlib.suppress(Exception):
                self._lock_channel.close()
            self._lock_channel = None

    def close(self) -> None:
        super().close()
        self._release_lock_session()
        if self._conn is not None:
            _close_hops(self._conn)
            self._conn = None


def _signal(chan: Any, name: str) -> None:
    """A channel's `signal` request (RFC 4254 6.9; OpenSSH's sshd signals the session's process
    group). paramiko has no call for it: built as paramiko builds its own channel requests."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    msg = Message()
    msg.add_byte(cMSG_CHANNEL_REQUEST)
    msg.add_int(chan.remote_chanid)
    msg.add_string("signal")
    msg.add_boolean(False)
    msg.add_string(name)
    chan.transport._send_user_message(msg)


class _Hop:
    """One SSH connection of a route: the host itself, or a jump host in front of it (ProxyJump),
    or a ProxyCommand's pipe in front of it."""

    def __init__(
        self, host: str, port: int, user: str | None, connect_kwargs: dict[str, Any], timeout: float, gateway: Any
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.connect_kwargs, self.connect_timeout = connect_kwargs, timeout
        self.gateway: _Hop | str | None = gateway
        self.client = _paramiko().SSHClient()
        self.transport: Any = None
        self._sftp: Any = None

    def open(self) -> None:
        paramiko = _paramiko()
        sock: Any = None
        if isinstance(self.gateway, _Hop):
            self.gateway.open()
            sock = self.gateway.transport.open_channel(
                "direct-tcpip", (self.host, self.port), ("", 0), timeout=self.connect_timeout
            )
        elif self.gateway:
            sock = paramiko.ProxyCommand(self.gateway)
        kwargs = {"port": self.port, "username": self.user, "timeout": self.connect_timeout, "sock": sock}
        self.client.connect(self.host, **kwargs, transport_factory=_transport_class(), **self.connect_kwargs)
        self.transport = self.client.get_transport()

    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        self.client.close()


_MAX_JUMPS = 8


def _route(
    name: str, user: str | None, port: int | None, config: Any, connect_kwargs: dict[str, Any], timeout: float
) -> _Hop:
    """The way to `name` that ssh_config describes (HostName, User, Port, IdentityFile, ProxyJump,
    ProxyCommand), with the inventory's user and port before the file's. Jump hosts are looked up
    in the same file and get the host's key after their own and its time limits, never its
    password. `ProxyJump a,b` goes to a first, as OpenSSH does."""
    entry = config.lookup(name)
    keys = [*connect_kwargs.get("key_filename", []), *entry.get("identityfile", [])]
    own = {**connect_kwargs, **({"key_filename": keys} if keys else {})}
    host = entry.get("hostname", name)
    target_port = port or _number(entry.get("port", 22), "Port", name)
    target = _Hop(host, target_port, user or entry.get("user"), own, timeout, None)
    target.gateway = _gateway(name, host, entry, config, connect_kwargs, timeout, 0)
    return target


def _gateway(
    name: str, host: str, entry: Any, config: Any, connect_kwargs: dict[str, Any], timeout: float, depth: int
) -> _Hop | str | None:
    jumps = [j.strip() for j in entry.get("proxyjump", "").split(",") if j.strip()]
    if not jumps or jumps == ["none"]:
        return entry.get("proxycommand")
    if depth >= _MAX_JUMPS:
        raise Unreachable(f"ssh_config: more than {_MAX_JUMPS} ProxyJump hops to {name} (a loop?)")
    gateway: _Hop | str | None = None
    for i, spec in enumerate(jumps):
        user, _, rest = spec.removeprefix("ssh://").rpartition("@")
        jump, _, port = rest.partition(":") if rest.count(":") == 1 else (rest, "", "")
        if jump in (name, host):  # `Host *` with a ProxyJump matches the jump host too
            return None
        jump_entry = config.lookup(jump)
        jump_host = jump_entry.get("hostname", jump)
        keys = [*jump_entry.get("identityfile", []), *connect_kwargs.get("key_filename", [])]
        kwargs = {k: v for k, v in connect_kwargs.items() if k != "password"} | {"key_filename": keys}
        hop_timeout = float(_number(jump_entry.get("connecttimeout", timeout), "ConnectTimeout", jump))
        hop_port = _number(port or jump_entry.get("port", 22), "Port", jump)
        hop = _Hop(jump_host, hop_port, user or jump_entry.get("user"), kwargs, hop_timeout, gateway)
        if i == 0:  # the first jump host is reached as its own entry says
            hop.gateway = _gateway(jump, jump_host, jump_entry, config, connect_kwargs, timeout, depth + 1)
        gateway = hop
    return gateway


def _number(value: Any, keyword: str, name: str) -> int:
    """A whole number that ssh_config (or `ProxyJump host:port`) gives for `name`."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Unreachable(f"ssh_config: {keyword} {value!r} for {name} is not a number") from None


def _hops(conn: Any) -> list[_Hop]:
    """A route's connections, the host's first, then the jump hosts behind it, nearest first."""
    chain = []
    while isinstance(conn, _Hop):
        chain.append(conn)
        conn = conn.gateway
    return chain


def _close_hops(conn: Any) -> None:
    for hop in _hops(conn):
        hop.close()


_paramiko_lock = threading.Lock()
_ssh_config_lock = threading.Lock()
_parsed_ssh_configs: dict[tuple[tuple[str, int, int], ...], Any] = {}  # (path, mtime, size)... -> SSHConfig


@functools.cache
def _transport_class() -> Any:
    """paramiko's Transport asking for AES-GCM first. An AEAD cipher checks each packet inside
    OpenSSL; with CTR and an HMAC, paramiko compares every packet's MAC in a Python loop, which
    was the controller's largest cost on a converged run after imports. A server that offers no
    GCM cipher gets paramiko's usual order."""
    paramiko = _paramiko()
    usual = paramiko.Transport._preferred_ciphers
    first = tuple(c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in usual)

    class Transport(paramiko.Transport):
        _preferred_ciphers = (*first, *(c for c in usual if c not in first))

    return Transport


def _paramiko() -> Any:
    """paramiko, imported once for all threads. Its ssh_config module imports invoke (a task
    runner: 20-60 ms of imports, unittest.mock among them) only to run `Match exec` lines, so
    the import is held back here and invoke handed over only to a config that has one."""
    with _paramiko_lock:
        if "paramiko" not in sys.modules:
            held_back = "invoke" not in sys.modules
            if held_back:
                sys.modules["invoke"] = None  # type: ignore[assignment]  # paramiko's `import invoke` fails
            try:
                import paramiko
            finally:
                if held_back and "invoke" in sys.modules and sys.modules["invoke"] is None:
                    del sys.modules["invoke"]
        import paramiko

        return paramiko


def _ssh_config(setting: str | None) -> Any:
    """The parsed ssh_config a host's `ssh_config` names: "" none, None ~/.ssh/config then
    /etc/ssh/ssh_config (as OpenSSH reads them), else that file. Parsed once per run, not once
    per host."""
    paramiko = _paramiko()
    if setting == "":
        paths = []
    elif setting:
        paths = [os.path.expanduser(setting)]
    else:
        paths = [p for p in (os.path.expanduser("~/.ssh/config"), "/etc/ssh/ssh_config") if os.path.isfile(p)]
    try:
        key = tuple((p, (st := os.stat(p)).st_mtime_ns, st.st_size) for p in paths)
        with _ssh_config_lock:
            config = _parsed_ssh_configs.get(key)
            if config is None:
                config = paramiko.SSHConfig()
                for path in paths:
                    text = Path(path).read_text()
                    try:
                        config.parse(io.StringIO(text))
                    except paramiko.ssh_exception.ConfigParseError as exc:
                        raise Unreachable(f"ssh_config {path}: {exc}; fix that line") from None
                    if re.search(r"(?im)^\s*match\s.*\bexec\b", text):
                        _allow_match_exec(paramiko)
                _parsed_ssh_configs[key] = config
    except OSError as exc:
        raise Unreachable(f"cannot read ssh_config {exc.filename or setting}: {exc.strerror or exc}") from None
    return config


def _allow_match_exec(paramiko: Any) -> None:
    try:
        import invoke
    except ImportError as exc:  # paramiko then says that `Match exec` needs invoke
        paramiko.config.invoke_import_error = exc
        return
    paramiko.config.invoke = invoke


def connect(
    host: str,
    hostvars: Mapping[str, Any],
    *,
    accept_new_host_keys: bool = False,
    lock: HostLock | None = None,
) -> Connection:
    """The connection a host's variables ask for (not yet opened). With `lock`, the host is
    locked for this run when its first agent starts."""
    kind = str(hostvars.get("connection", "ssh"))
    if kind == "local":
        return LocalConnection(host, lock=lock)
    if kind != "ssh":
        raise ValueError(f"unknown connection type {kind!r} (use ssh or local)")
    policy = str(hostvars.get("host_key_checking", "strict"))
    options = SSHOptions(
        address=str(hostvars.get("address", host)),
        port=int(hostvars["port"]) if hostvars.get("port") else None,
        user=hostvars.get("user"),
        key=hostvars.get("key"),
        password=hostvars.get("password"),
        connect_timeout=float(hostvars.get("connect_timeout", 10)),
        known_hosts=str(hostvars.get("known_hosts", "~/.ssh/known_hosts")),
        accept_new_host_keys=accept_new_host_keys or policy == "accept-new",
        ssh_config=hostvars.get("ssh_config"),
        python=str(hostvars.get("python_interpreter") or "python3"),
    )
    return SSHConnection(host, options, lock=lock)


def lock_holder() -> str:
    """Who a waiting run is told holds a host: user@controller, pid, since when (UTC)."""
    import getpass

    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"{getpass.getuser()}@{socket.gethostname()}, pid {os.getpid()}, since {since}"
