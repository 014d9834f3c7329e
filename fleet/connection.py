"""How fleet reaches a host: run a script, put a file, get a file, close.

Two implementations share one interface: SSH (fabric/paramiko; one transport per host for the
whole run, a channel per command) and Local (subprocess). This is the only module that imports
fabric or paramiko.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shlex
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .model import CommandResult, Unreachable

# The script travels on stdin and is read whole before it runs, so it has no argv size limit,
# never shows in `ps`, and commands inside it cannot swallow the rest of it as their input.
_RUN_STDIN_SCRIPT = 'f=$(cat) && eval "$f" </dev/null'
_KILL_GRACE = 5
_EXIT_GRACE = 1.0  # how long output may trail a command's exit status
_POLL = 0.5


def remote_command(*, timeout: float | None = None, become: bool = False, become_user: str = "root") -> str:
    """The command line that runs a script fed on stdin, as the right user, within a limit."""
    parts = ["sh", "-c", _RUN_STDIN_SCRIPT]
    if timeout:
        # `timeout` ends its whole process group. Inside sudo it runs as the become user, so it may
        # signal every process the command started; outside, sudo would relay the signal to sh only.
        parts = ["timeout", "-k", f"{_KILL_GRACE}s", f"{int(max(1, timeout))}s", *parts]
    if become:
        parts = ["sudo", "-n", "-H", "-u", become_user, "--", *parts]
    return shlex.join(parts)


def with_env(script: str, env: Mapping[str, Any] | None) -> str:
    if not env:
        return script
    exports = "".join(f"export {_env_name(k)}={shlex.quote(str(v))}\n" for k, v in env.items())
    return exports + script


def _env_name(name: str) -> str:
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ValueError(f"{name!r} is not a valid environment variable name")
    return name


def _finish(out: bytes, err: bytes, code: int, started: float, timeout: float | None) -> CommandResult:
    # `timeout` exits 124 when it stopped the command, 137 when it had to kill it.
    timed_out = bool(timeout) and code in (124, 137)
    return CommandResult(
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        exited=code,
        duration=time.monotonic() - started,
        timed_out=timed_out,
    )


class Connection(Protocol):
    host: str
    commands: int

    def run(
        self,
        script: str,
        *,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        become: bool = False,
        become_user: str = "root",
    ) -> CommandResult: ...

    def put(self, content: bytes, path: str, mode: int | None = None) -> None: ...

    def get(self, path: str) -> bytes: ...

    def close(self) -> None: ...


class LocalConnection:
    """This machine, through a subprocess: same interface, no SSH."""

    def __init__(self, host: str = "localhost") -> None:
        self.host = host
        self.commands = 0

    def run(
        self,
        script: str,
        *,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        become: bool = False,
        become_user: str = "root",
    ) -> CommandResult:
        self.commands += 1
        started = time.monotonic()
        argv = ["sh", "-c", _RUN_STDIN_SCRIPT]
        if become and (os.geteuid() != 0 or become_user != "root"):
            argv = ["sudo", "-n", "-H", "-u", become_user, "--", *argv]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a hung command can be ended with its children
        )
        try:
            out, err = proc.communicate(with_env(script, env).encode(), timeout=timeout)
            return _finish(out, err, proc.returncode, started, None)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return CommandResult(
                out.decode("utf-8", "replace"),
                err.decode("utf-8", "replace"),
                124,
                time.monotonic() - started,
                timed_out=True,
            )

    def put(self, content: bytes, path: str, mode: int | None = None) -> None:
        target = Path(os.path.expanduser(path))
        tmp = target.with_name(f".{target.name}.fleet-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(content)
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(target)

    def get(self, path: str) -> bytes:
        return Path(os.path.expanduser(path)).read_bytes()

    def close(self) -> None:
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(_KILL_GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


_known_hosts_lock = threading.Lock()
# paramiko logs a transport's failure from its own thread; fleet reports it once, as Unreachable.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_parsed_known_hosts: dict[str, tuple[tuple[int, int], Any]] = {}  # path -> ((mtime, size), HostKeys)


def _hostkey_name(host: str, port: int | None) -> str:
    """How paramiko names a host in known_hosts."""
    return f"[{host}]:{port}" if port and port != 22 else host


def _known_keys(known_hosts: Path, host: str, port: int | None) -> Mapping[str, Any]:
    """The keys known_hosts holds for one host, key type -> key. The file is parsed once per run,
    not once per host: paramiko decodes every key of every line, and 50 hosts each parsing a
    50-line file cost seconds of CPU."""
    import paramiko

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


def _host_key_policy(accept_new: bool, known_hosts: Path) -> Any:
    import paramiko

    if not accept_new:
        return paramiko.RejectPolicy()

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """Trust a host's key on first contact and remember it; a changed key is still refused
        (paramiko raises BadHostKeyException before asking a policy)."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
            with _known_hosts_lock:
                known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with known_hosts.open("a") as fh:
                    fh.write(line)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return AcceptNew()


class SSHConnection:
    """One paramiko transport for the whole run; one channel per command."""

    def __init__(self, host: str, options: SSHOptions) -> None:
        self.host = host
        self.options = options
        self.commands = 0
        self._conn: Any = None

    def _target(self) -> str:
        o = self.options
        return f"{o.address}:{o.port}" if o.port else o.address

    def open(self) -> None:
        if self._conn is not None:
            return
        import paramiko
        from fabric import Config
        from fabric import Connection as FabricConnection

        o = self.options
        if o.ssh_config == "":
            config = Config(overrides={"load_ssh_configs": False})
        else:
            config = Config(runtime_ssh_path=os.path.expanduser(o.ssh_config)) if o.ssh_config else Config()
        connect_kwargs: dict[str, Any] = {"banner_timeout": o.connect_timeout, "auth_timeout": o.connect_timeout}
        if o.key:
            connect_kwargs["key_filename"] = [os.path.expanduser(o.key)]
        if o.password:
            connect_kwargs["password"] = o.password
        conn = FabricConnection(
            o.address,
            user=o.user,
            port=o.port,
            config=config,
            connect_timeout=int(max(1, o.connect_timeout)),
            connect_kwargs=connect_kwargs,
        )
        known_hosts = Path(os.path.expanduser(o.known_hosts))
        for hop in _hops(conn):  # the ProxyJump chain checks host keys too
            hop.client.set_missing_host_key_policy(_host_key_policy(o.accept_new_host_keys, known_hosts))
            for kind, key in _known_keys(known_hosts, hop.host, hop.port).items():
                hop.client.get_host_keys().add(_hostkey_name(hop.host, hop.port), kind, key)
            if hop is not conn:  # a jump host: the same key (besides its own) and time limits, no password
                keys = [*hop.connect_kwargs.get("key_filename", []), *connect_kwargs.get("key_filename", [])]
                hop.connect_kwargs = {k: v for k, v in connect_kwargs.items() if k != "password"} | {
                    "key_filename": keys
                }
                hop.connect_timeout = hop.connect_timeout or conn.connect_timeout
        route = self._target() + "".join(f" via {h.host}:{h.port}" for h in _hops(conn.gateway))
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            _close_hops(conn)
            port = next((h.port for h in _hops(conn) if h.host == exc.hostname), 22)  # maybe a jump host's
            shown = f"[{exc.hostname}]:{port}" if port != 22 else exc.hostname
            raise Unreachable(
                f"host key for {shown} has CHANGED (got {exc.key.get_name()} "
                f"{exc.key.get_fingerprint().hex()[:16]}…); refusing to connect. If the host was "
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

    def run(
        self,
        script: str,
        *,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        become: bool = False,
        become_user: str = "root",
    ) -> CommandResult:
        self.open()
        self.commands += 1
        started = time.monotonic()
        try:
            chan = self._conn.transport.open_session(timeout=self.options.connect_timeout)
            chan.exec_command(remote_command(timeout=timeout, become=become, become_user=become_user))
            try:
                chan.sendall(with_env(script, env).encode())
                chan.shutdown_write()
            except OSError:  # it ended before reading its whole script (e.g. sudo refused): its output says why
                if not self._conn.transport.is_active():
                    raise
            out, err = self._drain(chan, deadline=started + timeout + 2 * _KILL_GRACE if timeout else None)
            code = chan.recv_exit_status()
            chan.close()
        except (OSError, EOFError) as exc:
            raise Unreachable(f"connection to {self._target()} lost: {exc or type(exc).__name__}") from None
        except Exception as exc:  # paramiko.SSHException and friends
            if type(exc).__module__.startswith("paramiko"):
                raise Unreachable(f"connection to {self._target()} lost: {exc}") from None
            raise
        if code == -1:  # no exit status: we gave up at the deadline, a signal ended it, or the link died
            if not self._conn.transport.is_active():
                raise Unreachable(f"connection to {self._target()} lost while running a command")
            code = 124 if timeout else 255
        return _finish(out, err, code, started, timeout)

    @staticmethod
    def _drain(chan: Any, deadline: float | None) -> tuple[bytes, bytes]:
        """stdout and stderr until EOF; or until the deadline; or shortly after the command
        exited, since a background process it left behind may hold its output open for good."""
        out, err = bytearray(), bytearray()
        exited = False
        while True:
            done = chan.eof_received or chan.closed  # read before draining: data sent before is buffered
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if done:
                return bytes(out), bytes(err)
            if not exited and chan.exit_status_ready():
                exited = True
                grace = time.monotonic() + _EXIT_GRACE
                deadline = grace if deadline is None else min(deadline, grace)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                chan.close()  # the remote `timeout` should have ended it by now: stop waiting
                return bytes(out), bytes(err)
            # An exit status wakes no file descriptor, so look for it now and then.
            select.select([chan], [], [], _POLL if left is None else min(left, _POLL))

    def put(self, content: bytes, path: str, mode: int | None = None) -> None:
        import io

        self.open()
        sftp = self._conn.sftp()
        tmp = f"{path}.fleet-{uuid.uuid4().hex[:8]}"
        sftp.putfo(io.BytesIO(content), tmp)
        if mode is not None:
            sftp.chmod(tmp, mode)
        sftp.posix_rename(tmp, path)

    def get(self, path: str) -> bytes:
        import io

        self.open()
        buf = io.BytesIO()
        self._conn.sftp().getfo(path, buf)
        return buf.getvalue()

    def close(self) -> None:
        if self._conn is not None:
            _close_hops(self._conn)
            self._conn = None


def _hops(conn: Any) -> list[Any]:
    """A fabric connection and the ProxyJump connections behind it, nearest first."""
    from fabric import Connection as FabricConnection

    chain = []
    while isinstance(conn, FabricConnection):
        chain.append(conn)
        conn = conn.gateway
    return chain


def _close_hops(conn: Any) -> None:
    for hop in _hops(conn):  # fabric closes only the outermost connection itself
        hop.close()


def connect(host: str, hostvars: Mapping[str, Any], *, accept_new_host_keys: bool = False) -> Connection:
    """The connection a host's variables ask for (not yet opened)."""
    kind = str(hostvars.get("connection", "ssh"))
    if kind == "local":
        return LocalConnection(host)
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
    )
    return SSHConnection(host, options)
