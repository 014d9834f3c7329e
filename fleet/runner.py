"""Hosts in parallel on a bounded pool: one connection per host for the whole run, plays in
order, `serial:` batches, and a host's failure stopping only that host."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .connection import Connection, HostLock, HostLocked, connect, lock_holder
from .inventory import Inventory, check_connection_vars
from .model import FleetError, RunOptions, RunReport, Status, TaskResult, Unreachable
from .report import Reporter
from .secrets import Redactor, inventory_marked_names, marked_names, secret_values

if TYPE_CHECKING:  # the engine proper is imported only by commands that run playbooks
    from .executor import HostExecutor
    from .playbook import Play, Playbook

T = TypeVar("T")


class Session:
    """The connections of one run, opened lazily, reused by every play and command."""

    def __init__(self, inventory: Inventory, options: RunOptions, *, lock_hosts: bool = False) -> None:
        self.inventory = inventory
        self.options = options
        self._connections: dict[str, Connection] = {}
        # Each host's agent holds a lock on the host for the run (released however the run ends).
        self.host_lock = HostLock(uuid.uuid4().hex[:12], lock_holder(), options.lock_wait) if lock_hosts else None

    def hostvars(self, host: str) -> dict[str, Any]:
        return {**self.inventory.host(host).vars, **self.options.extra_vars}

    def connection(self, host: str) -> Connection:
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
            self._connections[host] = conn
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

    def interrupt(self) -> None:
        """Stop every command running on every host now, with its process tree (any thread)."""
        for conn in list(self._connections.values()):
            with contextlib.suppress(Exception):
                conn.interrupt()

    def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):  # best effort: the run's result is already known
                conn.close()
        self._connections.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parallel(hosts: Iterable[str], work: Callable[[str], T], forks: int) -> dict[str, T]:
    """work(host) for every host on at most `forks` threads, results keyed by host."""
    hosts = list(hosts)
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return dict(zip(hosts, pool.map(work, hosts), strict=True))


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
) -> RunReport:
    from .executor import HostExecutor

    limited = set(inventory.require(limit)) if limit else None
    plays = [(play, _play_batches(inventory, play, limited)) for play in playbook.plays]  # bad input fails first
    for host in dict.fromkeys(h for _, play_batches in plays for batch in play_batches for h in batch):
        check_connection_vars(host, {**inventory.host(host).vars, **options.extra_vars})
    report = RunReport()
    started: dict[str, float] = {}
    executors: dict[str, HostExecutor] = {}
    with Session(inventory, options, lock_hosts=not options.no_lock) as session:
        redactor = session.redactor(
            None, *(play.vars for play in playbook.plays), marked=[n for p in playbook.plays for n in p.secrets]
        )
        reporter.redactor = redactor

        def run_host(play: Play, host: str) -> None:
            host_report = report.host(host)
            if host_report.unreachable or host_report.failed:
                return  # a host that failed earlier sits out the rest of the run
            started.setdefault(host, time.monotonic())
            if host not in executors:
                executors[host] = HostExecutor(
                    host, session.hostvars(host), session.connection(host), options, host_report, reporter, redactor
                )
            try:
                executors[host].run_play(play)
            except HostLocked as exc:  # another run works on this host: a failed host, not an unreachable one
                locked = TaskResult(host, "host lock", "lock", Status.FAILED, redactor.text(str(exc)))
                host_report.results.append(locked)
                reporter.task_done(locked)
            except Unreachable as exc:
                host_report.unreachable = redactor.text(str(exc))
                reporter.host_unreachable(host, host_report.unreachable)
            finally:
                host_report.commands = session.commands(host)
                host_report.duration = time.monotonic() - started[host]

        for play, play_batches in plays:
            reporter.play_started(play.title, [h for batch in play_batches for h in batch])
            for batch in play_batches:
                parallel(batch, lambda h, play=play: run_host(play, h), options.forks)
    reporter.run_done(report)
    return report


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
