"""Hosts in parallel on a bounded pool: one connection per host for the whole run, plays in
order, `serial:` batches, a host's failure stopping only that host (unless the play's failure
policy says the run stops), and Ctrl-C ending the remote commands before the run ends."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .connection import Connection, HostLock, HostLocked, connect, lock_holder, with_env
from .interrupt import Interrupt, Interrupted
from .inventory import Inventory, check_connection_vars
from .model import CommandResult, FleetError, RunOptions, RunReport, Status, TaskResult, Unreachable
from .report import Reporter, Tee
from .secrets import Redactor, inventory_marked_names, marked_names, secret_values

if TYPE_CHECKING:  # the engine proper is imported only by commands that run playbooks
    from .executor import HostExecutor
    from .playbook import Play, Playbook

T = TypeVar("T")
# After an interrupt, how long the workers get to come back once their commands were ended.
INTERRUPT_GRACE = 6.0


class WatchedConnection:
    """A host's connection as a run hands it out: it refuses new commands once the run stops (an
    interrupt, or a failure policy), and tells the observer (run log, -vv) about every command."""

    def __init__(self, conn: Connection, session: Session) -> None:
        self._conn = conn
        self._session = session

    def __getattr__(self, name: str) -> Any:  # put, get, close, commands, host, ... as they are
        return getattr(self._conn, name)

    def run(self, script: str, **kwargs: Any) -> CommandResult:
        session, host = self._session, self._conn.host
        if session.stop_reason:
            raise Interrupted(session.stop_reason)
        shown = with_env(script, kwargs.get("env")) if kwargs.get("env") else script
        try:
            result = self._conn.run(script, **kwargs)
        except Exception as exc:
            session.observer.command_done(host, shown, None, f"{type(exc).__name__}: {exc}")
            if session.interrupted.is_set():  # ended under it (a closed connection fails in odd ways)
                raise Interrupted(session.stop_reason or "interrupted") from None
            raise
        session.observer.command_done(host, shown, result, None)
        if session.interrupted.is_set():  # it was ended by the interrupt: its result is not the task's
            raise Interrupted(session.stop_reason or "interrupted")
        return result


class Session:
    """The connections of one run, opened lazily, reused by every play and command."""

    def __init__(
        self, inventory: Inventory, options: RunOptions, observer: Reporter | None = None, *, lock_hosts: bool = False
    ) -> None:
        self.inventory = inventory
        self.options = options
        self.observer = observer or Reporter()
        self.interrupted = threading.Event()
        self.stop_reason: str | None = None
        self._connections: dict[str, Connection] = {}
        # Each host's agent holds a lock on the host while a play runs there (released however the run ends).
        self.host_lock = HostLock(uuid.uuid4().hex[:12], lock_holder(), options.lock_wait) if lock_hosts else None
        # Where output too large for memory is written (the run's log folder; None: its middle is dropped).
        self.output_dir: Path | None = None
        self._lock = threading.Lock()

    def hostvars(self, host: str) -> dict[str, Any]:
        return {**self.inventory.host(host).vars, **self.options.extra_vars}

    def connection(self, host: str) -> Connection:
        with self._lock:
            if host not in self._connections:
                hostvars: Any = self.hostvars(host)
                if any(isinstance(v, str) and ("{{" in v or "{%" in v) for v in hostvars.values()):
                    from .templating import layered  # connection variables may be templates too

                    hostvars = layered((hostvars, True), ({"inventory_hostname": host}, False))
                try:
                    conn = connect(
                        host, hostvars, accept_new_host_keys=self.options.accept_new_host_keys, lock=self.host_lock
                    )
                except Exception as exc:  # ValueError, TemplateError: bad host variables, in one line
                    if isinstance(exc, Unreachable):
                        raise
                    raise FleetError(f"host {host}: {exc}") from None
                conn.output_dir = self.output_dir
                self._connections[host] = WatchedConnection(conn, self)  # type: ignore[assignment]
            return self._connections[host]

    def commands(self, host: str) -> int:
        conn = self._connections.get(host)
        return conn.commands if conn else 0

    def redactor(self, host: str | None = None, *more: Mapping[str, Any], marked: Iterable[str] = ()) -> Redactor:
        """Masks the secrets of these hosts (all by default), -e and `more` variables."""
        hosts = [host] if host else self.inventory.hosts
        names = {*marked, *inventory_marked_names(self.inventory), *marked_names(self.options.extra_vars, *more)}
        values = secret_values(self.options.extra_vars, *more, marked=names)
        for name in hosts:
            values |= secret_values(self.inventory.host(name).vars, marked=names)
        return Redactor(values, names)

    def halt(self, reason: str) -> None:
        """No new command on any host from now on (commands running finish)."""
        self.stop_reason = self.stop_reason or reason

    def release_lock(self, host: str) -> None:
        conn = self._connections.get(host)
        if conn is not None:
            with contextlib.suppress(Exception):  # a lost host released it already
                conn.release_lock()

    def interrupt(self) -> None:
        """End the commands running on every host, in parallel: the connection's interrupt()
        kills each command's remote process tree; a connection without one is closed instead."""
        self.interrupted.set()
        self.halt("interrupted")
        with self._lock:
            connections = list(self._connections.values())

        def end(conn: Any) -> None:
            inner = getattr(conn, "_conn", conn)
            stop = getattr(inner, "interrupt", None) or inner.close
            with contextlib.suppress(Exception):
                stop()

        threads = [threading.Thread(target=end, args=(c,), daemon=True) for c in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(INTERRUPT_GRACE)

    def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):  # best effort: the run's result is already known
                conn.close()
        self._connections.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parallel(
    hosts: Iterable[str], work: Callable[[str], T], forks: int, stop: threading.Event | None = None
) -> dict[str, T]:
    """work(host) for every host on at most `forks` threads, results keyed by host (in order).

    Daemon threads, waited for in short steps: Ctrl-C reaches the main thread at once, and once
    `stop` is set no new host starts and the wait ends after a grace period even if a worker
    hangs (its result is then missing). A worker's exception is raised here, as pool.map would."""
    hosts = list(hosts)
    results: dict[str, T] = {}
    errors: list[BaseException] = []
    pending = iter(hosts)
    lock = threading.Lock()

    def worker() -> None:
        while not (stop and stop.is_set()):
            with lock:
                host = next(pending, None)
            if host is None:
                return
            try:
                results[host] = work(host)
            except BaseException as exc:  # raised again in the caller's thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(forks, len(hosts))))]
    for thread in threads if hosts else []:
        thread.start()
    deadline = None
    for thread in threads if hosts else []:
        while thread.is_alive():
            thread.join(0.1)
            if stop is not None and stop.is_set():
                deadline = deadline or time.monotonic() + INTERRUPT_GRACE
                if time.monotonic() > deadline:
                    break
    if errors:
        raise errors[0]
    return {h: results[h] for h in hosts if h in results}


def batches(hosts: list[str], serial: int | str | None) -> list[list[str]]:
    if not serial:
        return [hosts]
    try:
        if isinstance(serial, str) and serial.endswith("%"):
            size = max(1, len(hosts) * int(serial[:-1]) // 100)
        else:
            size = int(serial)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise FleetError(f"serial must be at least 1 (or a percentage), got {serial!r}")
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


def run_playbook(
    playbook: Playbook,
    inventory: Inventory,
    options: RunOptions,
    reporter: Reporter,
    limit: str | None = None,
    *,
    command: str = "run",
    keep_log: bool = True,
) -> RunReport:
    from .executor import HostExecutor
    from .runlog import RunLog

    limited = set(inventory.require(limit)) if limit else None
    plays = [(play, _play_batches(inventory, play, limited)) for play in playbook.plays]  # bad input fails first
    all_hosts = list(dict.fromkeys(h for _, bs in plays for b in bs for h in b))
    for host in all_hosts:  # a host's static connection settings: checked before any host is touched
        check_connection_vars(host, {**inventory.host(host).vars, **options.extra_vars})
    report = RunReport(run_id=reporter.run_id)
    started: dict[str, float] = {}
    executors: dict[str, HostExecutor] = {}
    finished: set[str] = set()  # hosts of the current batch whose worker came back
    run_started = time.monotonic()
    redactor = Session(inventory, options).redactor(
        None, *(play.vars for play in playbook.plays), marked=[n for p in playbook.plays for n in p.secrets]
    )
    reporter.redactor = redactor
    log = RunLog(reporter.run_id, redactor, keep=keep_log)  # not kept: nothing written, `@failed` unchanged
    report.log_dir = None if log.error else str(log.dir)
    events = Tee(reporter, log)
    interrupt = Interrupt()
    with interrupt, Session(inventory, options, observer=events, lock_hosts=not options.no_lock) as session:
        interrupt.on_interrupt(session.interrupt)
        session.output_dir = None if log.error else log.dir
        events.run_started(
            command=command,
            hosts=all_hosts,
            playbook=str(playbook.path),
            check=options.check,
            log_dir=report.log_dir,
            pattern=limit,
        )

        def run_host(play: Play, host: str) -> None:
            host_report = report.host(host)
            if host_report.unreachable or host_report.failed or host_report.interrupted is not None:
                return  # a host that failed earlier sits out the rest of the run
            started.setdefault(host, time.monotonic())
            try:
                if host not in executors:
                    conn = session.connection(host)
                    executors[host] = HostExecutor(
                        host, session.hostvars(host), conn, options, host_report, events, redactor
                    )
                executors[host].run_play(play)
            except Interrupted:
                task = log.current.get(host, ("", 0.0))[0]
                host_report.interrupted = task
                events.host_interrupted(host, task or None, session.stop_reason or "interrupted")
            except HostLocked as exc:  # another run works on this host: a failed host, not an unreachable one
                locked = TaskResult(host, "host lock", "lock", Status.FAILED, redactor.show(str(exc)))
                host_report.results.append(locked)
                events.task_done(locked)
            except Unreachable as exc:
                host_report.unreachable = redactor.show(str(exc))
                events.host_unreachable(host, host_report.unreachable)
            except FleetError as exc:  # this host's own bad input (variables, connection type, facts)
                stage = "connect" if host not in executors else "gather facts"
                _host_error(host_report, events, redactor.show(str(exc)), stage)
            finally:
                session.release_lock(host)  # held per play: two runs never wait on each other in a circle
                host_report.commands = session.commands(host)
                host_report.duration = time.monotonic() - started[host]
                finished.add(host)

        for play, play_batches in plays:
            if session.stop_reason:
                break
            gated: dict[str, Play] = {}  # a gated play: each taking host's own copy
            if play.gate is not None:
                play_batches, gated = _gated(play, play_batches, report, events, redactor)
                if not play_batches:
                    continue
            events.play_started(play.title, [h for batch in play_batches for h in batch])
            policy = FailurePolicy.of(play)
            for batch in play_batches:
                if session.stop_reason:
                    break
                watch = _FatalWatch(batch, session) if policy.any_errors_fatal else Reporter()
                events.reporters.append(watch)
                finished.clear()
                work = lambda h, p=play, g=gated: run_host(g.get(h, p), h)  # noqa: E731
                parallel(batch, work, options.forks, stop=interrupt.requested)
                events.reporters.remove(watch)
                for host in batch if interrupt.requested.is_set() else []:
                    if report.host(host).interrupted is None and host not in finished:  # still stuck in a command
                        task = log.current.get(host, ("", 0.0))[0]
                        report.host(host).interrupted = task
                        report.host(host).commands = session.commands(host)
                        report.host(host).duration = time.monotonic() - started.get(host, run_started)
                        events.host_interrupted(host, task or None, "interrupted; its command did not end in time")
                reason = policy.verdict(report, batch)
                if reason:
                    session.halt(reason)  # the first reason stays (any_errors_fatal's names the host)
                    report.stopped = session.stop_reason
        if interrupt.requested.is_set():
            report.interrupted = True
            interrupt.hooks_done.wait(INTERRUPT_GRACE)
            for host in all_hosts:  # hosts the interrupt kept from starting
                if host not in report.hosts:
                    report.host(host).interrupted = ""
    report.duration = time.monotonic() - run_started
    log.finish(report)
    events.run_done(report)
    return report


def _gated(
    play: Play, play_batches: list[list[str]], report: RunReport, events: Reporter, redactor: Redactor
) -> tuple[list[list[str]], dict[str, Play]]:
    """A gated play's batches and each taking host's own play (the gate's variables added); a
    host the gate refuses fails here, with the gate's reason, without running anything."""
    from dataclasses import replace

    hosts = [h for batch in play_batches for h in batch if not _failed(report, h)]
    verdicts = play.gate(report, hosts) if play.gate else {}
    gated: dict[str, Play] = {}
    for host in hosts:
        verdict = verdicts.get(host)
        if isinstance(verdict, str):
            result = TaskResult(host, play.title, "gate", Status.FAILED, redactor.show(verdict))
            report.host(host).results.append(result)
            events.task_done(result)
        elif verdict is not None:
            gated[host] = replace(play, vars={**play.vars, **verdict}, gate=None)
    return [kept for batch in play_batches if (kept := [h for h in batch if h in gated])], gated


def _host_error(host_report: Any, events: Reporter, message: str, stage: str) -> None:
    host_report.error = message
    result = TaskResult(host=host_report.host, task=stage, action="fleet", status=Status.FAILED, message=message)
    host_report.results.append(result)
    events.task_done(result)


class FailurePolicy:
    """A play's `any_errors_fatal` and `max_fail_percentage`, judged after each batch."""

    def __init__(self, any_errors_fatal: bool = False, max_fail_percentage: float | None = None) -> None:
        self.any_errors_fatal = any_errors_fatal
        self.max_fail_percentage = max_fail_percentage

    @classmethod
    def of(cls, play: Any) -> FailurePolicy:
        pct = getattr(play, "max_fail_percentage", None)
        return cls(bool(getattr(play, "any_errors_fatal", False)), None if pct is None else float(pct))

    def verdict(self, report: RunReport, batch: list[str]) -> str | None:
        """Why the run stops after this batch, or None."""
        bad = [h for h in batch if _failed(report, h)]
        if not bad:
            return None
        if self.any_errors_fatal:
            return f"any_errors_fatal: {len(bad)} host(s) failed ({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''})"
        if self.max_fail_percentage is not None:
            share = 100.0 * len(bad) / len(batch)
            if share > self.max_fail_percentage:
                return (
                    f"max_fail_percentage {self.max_fail_percentage:g}% crossed: {len(bad)} of {len(batch)} "
                    f"host(s) in the batch failed ({share:.0f}%)"
                )
        return None


def _failed(report: RunReport, host: str) -> bool:
    h = report.hosts.get(host)
    return bool(h and (h.failed or h.unreachable))


class _FatalWatch(Reporter):
    """With any_errors_fatal, the first failure in a batch stops every host at its next command."""

    def __init__(self, batch: list[str], session: Session) -> None:
        super().__init__()
        self.batch, self.session = set(batch), session

    def task_done(self, result: TaskResult) -> None:
        if result.host in self.batch and result.status is Status.FAILED and not result.ignored:
            self.session.halt(f"any_errors_fatal: {result.host} failed at {result.task!r}")

    def host_unreachable(self, host: str, reason: str) -> None:
        if host in self.batch:
            self.session.halt(f"any_errors_fatal: {host} is unreachable")


def _play_batches(inventory: Inventory, play: Play, limited: set[str] | None) -> list[list[str]]:
    try:
        hosts = inventory.require(play.hosts)
        if limited is not None:
            hosts = [h for h in hosts if h in limited]
        return batches(hosts, play.serial) if hosts else []
    except FleetError as exc:
        raise FleetError(f"{play.source}: {exc}") from None


def each_host(
    session: Session,
    hosts: list[str],
    work: Callable[[str, Connection], T],
    forks: int = 16,
) -> dict[str, T | Unreachable]:
    """work(host, connection) on every host in parallel; unreachable hosts give their error."""

    def guarded(host: str) -> T | Unreachable:
        try:
            return work(host, session.connection(host))
        except Unreachable as exc:
            return exc

    return parallel(hosts, guarded, forks)
