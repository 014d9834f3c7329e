"""The CLI's start-up, guarded by counting what each command imports (never by timing it): a
command loads only what it needs, so a module-level import added somewhere cannot quietly slow
every command down. bench/ measures the time (bench/README.md, bench/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# Relative to the checkout (the CLI runs there): `fleet inventory` titles its table with this path,
# and a title wider than the table is laid out by rich, so a long checkout path loaded rich.
LOCAL = "inventories/local"

# Runs the real CLI in a fresh interpreter, then writes every module it imported.
PROBE = (
    "import json, sys\n"
    "from fleet.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[2:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "with open(sys.argv[1], 'w') as fh:\n"
    "    json.dump(sorted(sys.modules), fh)\n"
    "sys.exit(code)\n"
)

# What start-up costs most (bench/README.md): tens of milliseconds each on a loaded machine.
HEAVY = frozenset({"fabric", "invoke", "pydantic", "jinja2", "paramiko", "rich", "yaml", "packaging", "asyncio"})


def imported(tmp_path: Path, *args: str) -> set[str]:
    """The top-level packages `fleet ARGS` imported, run as a user runs it."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {name.partition(".")[0] for name in json.loads(out.read_text())}


def book(tmp_path: Path, task: str) -> str:
    path = tmp_path / "book.yaml"
    path.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - {task}\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--version"], set()),
        (["--help"], set()),
        (["inventory", "-i", LOCAL], {"yaml"}),  # off a terminal tables are plain text (tests/test_plain_output.py)
        (["facts", "-i", LOCAL], {"yaml"}),
        (["shell", "localhost", "-i", LOCAL, "--", "true"], {"yaml"}),
        (["health", "-i", LOCAL], {"yaml"}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_commands_load_none_of_what_they_do_not_need(tmp_path, args, allowed):
    assert imported(tmp_path, *args) & HEAVY <= allowed


def test_a_run_loads_jinja_only_for_a_template_and_never_fabric(tmp_path):
    plain = imported(tmp_path, "run", book(tmp_path, "command: 'true'"), "-i", LOCAL)
    assert "pydantic" in plain  # the playbook is validated: the probe sees real imports
    assert plain & HEAVY <= {"pydantic", "yaml", "asyncio"}  # asyncio: pydantic's typing_extensions
    templated = imported(tmp_path, "run", book(tmp_path, "command: 'echo {{ inventory_hostname }}'"), "-i", LOCAL)
    assert "jinja2" in templated and not templated & {"fabric", "invoke", "packaging"}


@pytest.mark.ssh
def test_ssh_loads_paramiko_without_fabric_or_invoke(ssh_fleet, ssh_inventory, tmp_path):
    facts = imported(tmp_path, "facts", "-i", str(ssh_inventory))
    assert "paramiko" in facts
    assert not facts & {"fabric", "invoke", "pydantic", "jinja2", "packaging", "rich"}
