"""The engine against real sshd hosts: converge, re-run, check mode, unreachable hosts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import by_host, run_fleet

pytestmark = pytest.mark.ssh

DEMO = Path(__file__).resolve().parent.parent / "playbooks" / "demo.yaml"


def recap(stdout: str) -> dict[str, dict]:
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if e["event"] == "recap"}


def test_demo_converges_then_changes_nothing(ssh_fleet, ssh_inventory, tmp_path):
    first = run_fleet("run", DEMO, "-i", ssh_inventory, "--json", "-e", "demo_dir=~/demo-converge")
    assert first.returncode == 0, first.stdout + first.stderr
    hosts = recap(first.stdout)
    assert set(hosts) == {h.name for h in ssh_fleet.hosts}
    assert all(h["changed"] >= 5 and h["failed"] == 0 for h in hosts.values())
    for host in ssh_fleet.hosts:
        greeting = (host.home / "demo-converge" / "greeting.txt").read_text()
        assert greeting == f"hello from fleet on {host.name}\n"

    second = run_fleet("run", DEMO, "-i", ssh_inventory, "--json", "-e", "demo_dir=~/demo-converge")
    assert second.returncode == 0, second.stdout + second.stderr
    for name, host in recap(second.stdout).items():
        assert host["changed"] == 0, name
        # one batch (facts and the five probes) + the command that always runs (1)
        assert host["commands"] == 2, name


def test_check_mode_changes_nothing_on_disk(ssh_fleet, ssh_inventory):
    result = run_fleet("run", DEMO, "-i", ssh_inventory, "--check", "--json", "-e", "demo_dir=~/demo-check")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    would = [e for e in events if e["event"] == "task_result" and e["status"] == "changed"]
    assert would and all(e["message"].startswith("would ") for e in would)
    for host in ssh_fleet.hosts:
        assert not (host.home / "demo-check").exists()


def test_unreachable_host_stops_only_itself(ssh_fleet, tmp_path):
    down = {"address": ssh_fleet.unused_address(), "port": 1, "user": "nobody"}
    inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts={"node-down": down})
    result = run_fleet("run", DEMO, "-i", inv, "--json", "-e", "demo_dir=~/demo-down")
    assert result.returncode == 4, result.stderr
    hosts = recap(result.stdout)
    assert hosts["node-down"]["unreachable"]
    assert f"{ssh_fleet.unused_address()}:1" in hosts["node-down"]["unreachable"]
    for host in ssh_fleet.hosts:
        assert hosts[host.name]["failed"] == 0 and not hosts[host.name]["unreachable"]


def test_changed_host_key_is_refused(ssh_fleet, tmp_path):
    inv = ssh_fleet.inventory(tmp_path / "inv")
    target = ssh_fleet.hosts[0]
    bad = tmp_path / "known_hosts"
    other = ssh_fleet.hosts[1]
    # known_hosts claims node-01 has node-02's key: exactly what a changed key looks like
    bad.write_text(f"[{target.address}]:{target.port} {' '.join(other.host_public_key)}\n")
    result = run_fleet("facts", "-i", inv, "--hosts", target.name, "-e", f"known_hosts={bad}")
    assert result.returncode == 4
    assert "CHANGED" in result.stdout and "ssh-keygen -R" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_host_key_needs_opt_in(ssh_fleet, tmp_path):
    inv = ssh_fleet.inventory(tmp_path / "inv")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = run_fleet("facts", "-i", inv, "--hosts", "node-01", "-e", f"known_hosts={empty}", "--json")
    assert refused.returncode == 4
    assert "--accept-new-host-keys" in by_host(refused.stdout)["node-01"]["unreachable"]
    accepted = run_fleet(
        "facts", "-i", inv, "--hosts", "node-01", "-e", f"known_hosts={empty}", "--json", "--accept-new-host-keys"
    )
    assert accepted.returncode == 0, accepted.stdout
    assert ssh_fleet.hosts[0].address in empty.read_text()


def test_facts_over_ssh(ssh_fleet, ssh_inventory):
    result = run_fleet("facts", "-i", ssh_inventory, "--json")
    assert result.returncode == 0, result.stderr
    facts = by_host(result.stdout)
    assert set(facts) == {h.name for h in ssh_fleet.hosts}
    for f in facts.values():
        assert f["arch"] and f["cpus"] >= 1 and f["memory_bytes"] > 0
        assert f["gpus"] == [] and f["gpu_count"] == 0  # no GPU here: "no GPU", not an error


def test_become_runs_as_root(ssh_fleet, ssh_inventory, tmp_path):
    book = tmp_path / "become.yaml"
    book.write_text(yaml.safe_dump([{
        "hosts": "node-01", "gather_facts": False,
        "tasks": [{"name": "who", "command": "id -u", "become": True, "register": "who", "changed_when": False},
                  {"assert": {"that": "who.stdout.strip() == '0'"}}],
    }]))  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_file_the_login_user_cannot_read_is_never_taken_for_an_empty_one(ssh_fleet, ssh_inventory, tmp_path):
    """The file probe sends a small file's content and its checksum is computed from it; when the
    host cannot read the file (write-only mode), no content came: `line` must fail and say so,
    not plan from an empty file and replace what is there; `copy` must not call it converged."""
    host = ssh_fleet.host("node-02")
    target = host.home / "write-only.txt"
    target.unlink(missing_ok=True)
    target.write_text("keep me\n")
    shutil.chown(target, host.user, host.user)
    target.chmod(0o200)
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump([{"hosts": host.name, "gather_facts": False, "tasks": [
        {"name": "line", "line": {"path": "~/write-only.txt", "line": "added"}, "ignore_errors": True},
        {"name": "empty copy", "copy": {"dest": "~/write-only.txt", "content": ""}, "ignore_errors": True},
    ]}]))  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = {e["task"]: e["status"] for e in events if e["event"] == "task_result"}
    target.chmod(0o600)
    assert target.read_text() == "keep me\n"
    assert statuses == {"line": "failed", "empty copy": "failed"}, result.stdout[-3000:]
    messages = [e["message"] for e in events if e["event"] == "task_result"]
    assert all("Permission denied" in m for m in messages), messages
