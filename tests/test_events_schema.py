"""Every `--json` event of real commands on sshd hosts validates against fleet.events.SCHEMA, and
docs/events.md documents every event type and field of that schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_fleet
from jsonschema import Draft202012Validator

from fleet.events import EVENTS, SCHEMA

pytestmark = pytest.mark.ssh
COMMON = {"event", "run_id", "ts"}


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line is JSON, or this fails


def test_every_event_of_real_commands_matches_the_schema(ssh_fleet, tmp_path):
    inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts={"ghost": {"address": ssh_fleet.unused_address(),
                                                                        "connect_timeout": 2}})  # fmt: skip
    for host in ssh_fleet.hosts:
        (host.home / "schema.txt").unlink(missing_ok=True)
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "file", "copy": {"dest": "~/schema.txt", "content": "a {{ api_token }}\n"}},
        {"name": "loop", "command": "echo {{ item }}", "loop": [1, 2]},
        {"name": "quiet", "command": "echo hidden", "no_log": True},
        {"name": "skip", "command": "true", "when": False},
        {"name": "ignored", "command": "false", "ignore_errors": True},
        {"name": "fail on node-04", "shell": "echo out; echo err >&2; exit 7",
         "when": "inventory_hostname == 'node-04'"},
    ]}]))  # fmt: skip
    secret = ("-e", "api_token=t0k3n-x")
    outputs = {
        "run --check --diff": run_fleet("run", book, "-i", inv, "--json", "--check", "--diff", *secret),
        "run": run_fleet("run", book, "-i", inv, "--json", *secret),
        "shell": run_fleet("shell", "all", "-i", inv, "--json", "--timeout", "5", "--", "echo hi; echo e >&2"),
        "inventory": run_fleet("inventory", "-i", inv, "--json", *secret),
        "facts": run_fleet("facts", "-i", inv, "--json", "--hosts", "node-0[1:2],ghost"),
    }  # fmt: skip
    validator = Draft202012Validator(SCHEMA)
    seen: dict[str, int] = {}
    for name, result in outputs.items():
        assert "Traceback" not in result.stderr, (name, result.stderr)
        assert "t0k3n-x" not in result.stdout, name
        for event in lines(result.stdout):
            errors = [e.message for e in validator.iter_errors(event)]
            assert not errors, (name, event, errors[:3])
            seen[event["event"]] = seen.get(event["event"], 0) + 1
    must = {"run_start", "play_start", "task_start", "task_result", "host_unreachable", "recap", "run_end",
            "shell_result", "host", "facts"}  # fmt: skip
    assert must <= set(seen), seen
    run = lines(outputs["run"].stdout)
    assert len({e["run_id"] for e in run}) == 1 and run[0]["event"] == "run_start" and run[-1]["event"] == "run_end"
    failed = next(e for e in run if e["event"] == "task_result" and e["status"] == "failed" and not e.get("ignored"))
    assert (failed["host"], failed["rc"], failed["stdout"], failed["stderr"]) == ("node-04", 7, "out", "err")
    quiet = [e for e in run if e["event"] == "task_result" and e["task"] == "quiet"]
    assert quiet and all(e["stdout"] == "" and e["rc"] is None for e in quiet)
    end = run[-1]
    assert (end["exit_code"], end["failed_hosts"], end["unreachable_hosts"]) == (6, ["node-04"], ["ghost"])
    assert Path(end["log_dir"]).is_dir()
    diffs = [
        e["diff"] for e in lines(outputs["run --check --diff"].stdout) if e["event"] == "task_result" and e["diff"]
    ]
    assert diffs and all("********" in d for d in diffs)


def test_docs_describe_every_event_and_field():
    text = (REPO / "docs" / "events.md").read_text()
    for name, schema in EVENTS.items():
        assert re.search(rf"^### `{name}`", text, re.M), f"docs/events.md has no section for {name}"
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        for field in set(schema["properties"]) - COMMON:
            assert f"`{field}`" in section, f"docs/events.md: {name} does not describe `{field}`"
    for field in COMMON:
        assert f"| `{field}`" in text


@pytest.mark.parametrize(
    "command", [["doctor"], ["train", "status"], ["health"], ["inventory"], ["facts"]], ids=lambda c: " ".join(c)
)
def test_one_record_per_host_commands_match_the_schema_on_the_local_inventory(command):
    result = run_fleet(*command, "--json", "-i", "inventories/local")
    assert "Traceback" not in result.stderr, result.stderr
    events = lines(result.stdout)
    assert events and {e["host"] for e in events} == {"localhost"}
    validator = Draft202012Validator(SCHEMA)
    for event in events:
        assert not [e.message for e in validator.iter_errors(event)], event
