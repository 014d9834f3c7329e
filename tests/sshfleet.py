"""Real hosts for tests: one sshd process per host, each on its own loopback address with its own
host key, login user and home. Started and stopped by PID; nothing outside 127.0.0.0/8 is used."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@dataclass
class SSHHost:
    name: str
    address: str
    port: int
    user: str
    home: Path
    dir: Path
    pid: int | None = None

    @property
    def host_public_key(self) -> str:
        return (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]

    def known_hosts_line(self) -> str:
        kind, key = self.host_public_key
        return f"[{self.address}]:{self.port} {kind} {key}\n"

    def start(self) -> None:
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")], stdout=log, stderr=log, start_new_session=True
        )
        self.pid = proc.pid
        self._proc = proc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {(self.dir / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.address}:{self.port}")

    def stop(self) -> None:
        """Stop this host's sshd and every session it started (by PID / process group)."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self._proc.wait(5)
        self.pid = None

    def new_host_key(self) -> None:
        """Give the host a new identity (as if reinstalled); takes effect on restart."""
        for suffix in ("", ".pub"):
            (self.dir / f"ssh_host_ed25519_key{suffix}").unlink()
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "ssh_host_ed25519_key"))


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def ensure_user(name: str, home: Path) -> None:
    try:
        pwd.getpwnam(name)
        _run("usermod", "-d", str(home), "-s", "/bin/sh", name)
    except KeyError:
        _run("useradd", "-M", "-d", str(home), "-s", "/bin/sh", name)
    _run("usermod", "-p", "*", name)  # no password, but not "locked": sshd lets keys in
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.chown(home, name, name)
    home.chmod(0o755)


SSHD_CONFIG = """\
ListenAddress {address}
Port {port}
HostKey {dir}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin no
Subsystem sftp internal-sftp
# Hosts serve as ProxyJump hops in the ssh_config tests.
AllowTcpForwarding yes
MaxSessions 200
MaxStartups 200
LogLevel {log_level}
"""


class SSHFleet:
    """N sshd hosts named node-01.. plus a shared client key and known_hosts.

    Each test run gets its own loopback subnet (127.A.B.x) and login users derived from its run
    id, so runs in parallel (several developers, CI) never share a host, user or home."""

    def __init__(
        self, root: Path, count: int, *, prefix: str = "node", run_id: int | None = None, log_level: str = "ERROR"
    ) -> None:
        """log_level VERBOSE makes each host's sshd.log say `Starting session:` for every session."""
        self.root = root
        self.run_id = os.getpid() % 60000 if run_id is None else run_id
        self.subnet = f"127.{1 + self.run_id // 250}.{self.run_id % 250}"
        self.hosts: list[SSHHost] = []
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.client_key = root / "client_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
        self.known_hosts = root / "known_hosts"
        for i in range(1, count + 1):
            name = f"{prefix}-{i:02d}"
            address = f"{self.subnet}.{i}"
            port = free_port(address)
            user = f"fl{self.run_id}{prefix[0]}{i:02d}"
            hdir = root / name
            hdir.mkdir()
            home = root / "home" / name
            ensure_user(user, home)
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hdir / "ssh_host_ed25519_key"))
            shutil.copy(f"{self.client_key}.pub", hdir / "authorized_keys")
            (hdir / "sshd_config").write_text(
                SSHD_CONFIG.format(address=address, port=port, dir=hdir, user=user, log_level=log_level)
            )
            self.hosts.append(SSHHost(name, address, port, user, home, hdir))
        self.write_known_hosts()

    def write_known_hosts(self) -> None:
        self.known_hosts.write_text("".join(h.known_hosts_line() for h in self.hosts))

    def start(self) -> SSHFleet:
        for host in self.hosts:
            host.start()
        return self

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()

    def unused_address(self) -> str:
        """An address in this run's subnet where nothing listens: an unreachable host."""
        return f"{self.subnet}.250"

    def remove_users(self) -> None:
        for host in self.hosts:
            subprocess.run(["userdel", host.user], capture_output=True)

    def host(self, name: str) -> SSHHost:
        return next(h for h in self.hosts if h.name == name)

    def inventory(self, path: Path, *, extra_hosts: dict[str, dict] | None = None, group: str = "nodes") -> Path:
        """Write a fleet inventory for these hosts (and any extra ones) and return its folder."""
        import yaml

        path.mkdir(parents=True, exist_ok=True)
        hosts = {h.name: {"address": h.address, "port": h.port, "user": h.user} for h in self.hosts}
        hosts.update(extra_hosts or {})
        data = {
            "all": {
                "vars": {
                    "key": str(self.client_key),
                    "known_hosts": str(self.known_hosts),
                    "ssh_config": "",
                    "connect_timeout": 5,
                },
                "children": {group: {"hosts": hosts}},
            }
        }
        (path / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def allow_sudo(users: list[str], path: Path) -> None:
    path.write_text("".join(f"{u} ALL=(ALL) NOPASSWD: ALL\n" for u in users))
    path.chmod(0o440)
