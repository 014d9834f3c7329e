"""The secret-leak scan: one playbook uses secrets from every source (inventory names, a
`secrets:` list in the inventory and in the play, `-e @file`, a no_log task's output) in commands,
environments, templates, a download URL, loop items and failures; every output a person or a
program sees is scanned for each secret and its encodings, and so are the command lines of every
process on the hosts while the run goes. The count must be 0."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from conftest import run_fleet
from faultkit import ProcessWatch, run_in_pty, summary, write_playbook

pytestmark = pytest.mark.ssh

SECRETS = {
    "hf_token": "hf_LeakScan/Tok+9876=",  # secret by its name
    "wandb_key": "wk-leakscan-5555",  # `*_key`
    "run_label": "label-leakscan-4444",  # named in the inventory's `secrets:`
    "play_marked": "play-leakscan-3333",  # named in the play's `secrets:`
    "db_password": "pw-leakscan-2222",  # from -e @file
}
NO_LOG_OUTPUT = "nolog-leakscan-1111"  # only ever printed by a no_log task
CONTROL = "\x1b]0;owned\x07\x1b[2J"


def forms(value: str) -> set[str]:
    """The value and what templates and shells make of it (computed here, not by fleet)."""
    raw = value.encode()
    return {
        value,
        value[:8],
        quote(value, safe=""),
        quote(value, safe="/"),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode(),
        base64.b64encode(b"user:" + raw).decode()[8:],  # inside a basic-auth header
    }


def leak_book(tmp_path: Path, download_url: str) -> Path:
    marker = "2.7319"  # `sleep 2.7319`: shows that the process watch saw the hosts' commands
    return write_playbook(tmp_path / "leaks.yaml", [{
        "hosts": "node-01,node-02", "gather_facts": False,
        "secrets": ["play_marked"], "vars": {"play_marked": SECRETS["play_marked"]},
        "tasks": [
            {"name": "encodings", "command": "echo {{ hf_token | urlencode }} {{ hf_token | tojson }} {{ wandb_key }}"
                                             " {{ run_label }} {{ play_marked }} {{ db_password }}"},
            {"name": "environment", "environment": {"HF_TOKEN": "{{ hf_token }}"},
             "shell": f"printf %s \"$HF_TOKEN\" | base64; printf 'user:%s' \"$HF_TOKEN\" | base64; sleep {marker}"},
            {"name": "template", "copy": {"dest": "~/leak.conf",
                                          "content": "token={{ hf_token }}\nwandb={{ wandb_key | urlencode }}\n"}},
            {"name": "download", "download": {"url": download_url + "?token={{ hf_token | urlencode }}",
                                              "dest": "~/payload.bin"}},
            {"name": "read hidden", "command": "cat nolog.txt", "register": "hidden", "no_log": True},
            {"name": "hidden kept", "assert": {"that": f"hidden.stdout.strip() | length == {len(NO_LOG_OUTPUT)}"}},
            {"name": "hidden reused", "command": "echo {{ hidden.stdout }} {{ hidden.stdout | urlencode }}"},
            {"name": "loop", "command": "echo {{ item }}", "loop": ["{{ wandb_key }}", "plain"]},
            {"name": "big output", "environment": {"HF_TOKEN": "{{ hf_token }}"}, "ignore_errors": True,
             "shell": "python3 -c 'import os, sys; sys.stdout.write((\"x \" + os.environ[\"HF_TOKEN\"] + "
                      "\" \\033]0;t\\007\\n\") * 120000)'; exit 1"},  # beyond any in-memory cap
            {"name": "failure", "shell": "echo {{ db_password }} >&2; printf '" + CONTROL.replace("\x1b", "\\033")
                                         .replace("\x07", "\\007") + " boom\\n' >&2; exit 3",
             "ignore_errors": True},
        ],
    }])  # fmt: skip


@pytest.fixture
def web(ssh_fleet, tmp_path):
    """A small HTTP server on this run's loopback subnet, for the download task."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "payload.bin").write_bytes(b"payload\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer((f"{ssh_fleet.subnet}.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{ssh_fleet.subnet}.1:{server.server_address[1]}/payload.bin"
    server.shutdown()


def test_no_secret_reaches_any_output_log_or_process_list(ssh_fleet, tmp_path, web):
    inv = ssh_fleet.inventory(tmp_path / "inv")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "nodes.yaml").write_text(
        yaml.safe_dump({k: v for k, v in SECRETS.items() if k in ("hf_token", "wandb_key", "run_label")})
        + "secrets: [run_label]\n"
    )
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"db_password: {SECRETS['db_password']}\n")
    book = leak_book(tmp_path, web)
    homes = [ssh_fleet.host(h).home for h in ("node-01", "node-02")]
    fleet_home = tmp_path / "controller-home"  # the controller's ~/.fleet (run logs) lands here
    fleet_home.mkdir()
    env = {"HOME": str(fleet_home), "FLEET_HOME": str(fleet_home / ".fleet")}  # run logs scanned below

    def reset() -> None:
        for home in homes:
            (home / "nolog.txt").write_text(NO_LOG_OUTPUT + "\n")
            for name in ("leak.conf", "payload.bin"):
                (home / name).unlink(missing_ok=True)

    needles = set().union(*(forms(v) for v in [*SECRETS.values(), NO_LOG_OUTPUT]))
    outputs: dict[str, str] = {}
    args = ("run", book, "-i", inv, "-e", f"@{extra}")
    with ProcessWatch(needles) as watch:
        reset()
        plain = run_fleet(*args, "--diff", env=env)
        outputs["plain --diff"] = plain.stdout + plain.stderr
        assert plain.returncode == 0, outputs["plain --diff"]
        for home in homes:  # the hosts got the real values
            assert (home / "leak.conf").read_text() == f"token={SECRETS['hf_token']}\nwandb=wk-leakscan-5555\n"
            assert (home / "payload.bin").read_bytes() == b"payload\n"
        reset()
        check = run_fleet(*args, "--check", "--diff", env=env)
        outputs["--check --diff"] = check.stdout + check.stderr
        reset()
        as_json = run_fleet(*args, "--json", env=env)
        outputs["--json"] = as_json.stdout + as_json.stderr
        assert as_json.returncode == 0, outputs["--json"]
        reset()
        code, live = run_in_pty(*args, env=env)
        outputs["live view (terminal)"] = live
        assert code == 0, live
    for name, command in (("inventory", ()), ("inventory --json", ("--json",))):
        listed = run_fleet("inventory", "-i", inv, "-e", f"@{extra}", *command, env=env)
        assert listed.returncode == 0
        outputs[name] = listed.stdout + listed.stderr
    shell = run_fleet(
        "shell", "node-01,node-02", "-i", inv, "-e", f"@{extra}", "--",
        "sh", "-c", "cat leak.conf; printf '\\033]0;owned\\007\\033[2J'", env=env,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert "token=********" in shell.stdout and "\\x1b]0;owned\\x07" in shell.stdout
    outputs["fleet shell"] = shell.stdout + shell.stderr
    logs = [p for p in (fleet_home / ".fleet").rglob("*") if p.is_file()] if (fleet_home / ".fleet").exists() else []
    for path in logs:  # keyed by run and file: each run's files are scanned, not only the last run's
        outputs[f"run log {path.relative_to(fleet_home)}"] = path.read_text(errors="replace")
    # "big output" is beyond the in-memory cap: its whole stdout sits beside the host's log, masked
    spilled = [p for p in logs if p.name.endswith(".stdout")]
    assert len(spilled) >= 4 and not [p for p in logs if p.name.endswith(".part")], [p.name for p in logs]
    shown_line = "x ******** \\x1b]0;t\\x07\n"
    assert all(outputs[f"run log {p.relative_to(fleet_home)}"].count(shown_line) == 120000 for p in spilled)

    leaks = [(name, n) for name, text in outputs.items() for n in needles if n in text]
    # The scans can fail: the secrets' own names and masks are where they should be.
    assert "********" in outputs["plain --diff"] and "output hidden (no_log)" in outputs["plain --diff"]
    assert "+token=********" in outputs["plain --diff"]
    assert any("sleep 2.7319" in line for line in watch.seen), "the process watch never saw the hosts' commands"
    raw_controls = [name for name, text in outputs.items() if "\x1b]0;" in text or "\x07" in text or "\x1b[2J" in text]
    assert "\\x1b]0;owned\\x07\\x1b[2J boom" in outputs["plain --diff"]
    summary(
        f"secret-leak scan: {len(SECRETS) + 1} secrets in {len(needles)} forms, "
        f"{len(outputs)} outputs ({len(logs)} run log files), {watch.samples} process command lines sampled "
        f"on the hosts; leaks in output: {len(leaks)}, in process lists: {len(watch.hits)}; "
        f"raw control characters: {len(raw_controls)}"
    )
    assert leaks == []
    assert watch.hits == [], watch.hits
    assert raw_controls == []
