"""Shared fixtures: a fleet of real sshd hosts on loopback addresses, and a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sshfleet import SSHFleet, allow_sudo

REPO = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).parent / "recorded"


def _can_run_sshd() -> str | None:
    if os.geteuid() != 0:
        return "the sshd hosts need root (to create their login users)"
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        return "sshd is not installed (apt-get install -y openssh-server)"
    return None


@pytest.fixture(autouse=True)
def fleet_home(tmp_path_factory, monkeypatch):
    """Run logs (~/.fleet/runs) of the commands a test starts go to a folder of its own (not inside
    tmp_path, which tests use as an inventory folder)."""
    home = tmp_path_factory.mktemp("fleet-home")
    monkeypatch.setenv("FLEET_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def ssh_fleet():
    """Four real sshd hosts, node-01..node-04 on this run's loopback subnet, each with its own
    host key, login user (passwordless sudo) and home."""
    reason = _can_run_sshd()
    if reason:
        pytest.fail(reason)  # never a silent skip: CI must run these
    root = Path(tempfile.mkdtemp(prefix="fleet-sshd-", dir="/tmp"))
    fleet = SSHFleet(root, 4)
    sudoers = Path(f"/etc/sudoers.d/fleet-tests-{fleet.run_id}")
    allow_sudo([h.user for h in fleet.hosts], sudoers)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        sudoers.unlink(missing_ok=True)
        fleet.remove_users()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ssh_inventory(ssh_fleet, tmp_path):
    return ssh_fleet.inventory(tmp_path / "inv")


def by_host(stdout: str) -> dict[str, dict]:
    """`--json` output of a command that emits one record per host (facts, inventory, train status)."""
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if "host" in e}


def wait_until(check, wait: float = 8.0) -> bool:
    """Poll `check` until it is true or `wait` seconds pass (bounded); its last answer."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def run_fleet(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `fleet` CLI as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *map(str, args)],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# One line per fault/bad-input/leak suite, printed after the run whatever pytest's capture mode.
SUITE_SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for line in SUITE_SUMMARIES:
        terminalreporter.write_line(line)
