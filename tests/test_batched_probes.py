"""Batched and unbatched runs give identical results.

Every task type runs both ways on real sshd hosts (node-01 batched, node-02 with --no-batch, same
playbook): on clean hosts (first run, where several tasks change what a later task probes), on
converged hosts, after the hosts were changed by hand in the middle of the play's work, and in
--check mode. The task events (status, message, diff, item), every registered result (written to a
file by the last task) and the files left behind are compared byte for byte; the batched run must
also cost fewer round trips."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_fleet

pytestmark = pytest.mark.ssh

BATCHED, UNBATCHED = "node-01", "node-02"
WORK = "bp"  # the folder in each host's home

TASKS = [
    {"name": "work folder", "directory": {"path": "~/bp", "mode": "0755"}},
    {"name": "folders", "directory": {"path": "~/bp/{{ item }}", "mode": "0750"}, "loop": ["conf", "data", "bin"]},
    {"name": "config", "copy": {"dest": "~/bp/conf/app.conf", "content": "[app]\nworkers = 4\n", "mode": "0644"}},
    {"name": "env line", "line": {"path": "~/bp/conf/env.sh", "line": "mode = prod", "regexp": "^mode ="}},
    # changes the file the task above just wrote: its probe must see the new content
    {"name": "second line, own env", "line": {"path": "~/bp/conf/env.sh", "line": "tag = {{ lookup_tag }}"},
     "environment": {"BP_FLAG": "1"}},
    {"name": "template", "template": {"src": "node.j2", "dest": "~/bp/conf/node.conf", "mode": "0600"}},
    {"name": "write a file by hand", "shell": {"cmd": "printf 'made by shell\\n' > ~/bp/data/hand.txt"},
     "changed_when": False},
    # must see what the command above wrote: up to date, not create
    {"name": "same content by copy", "copy": {"dest": "~/bp/data/hand.txt", "content": "made by shell\n"}},
    {"name": "stamp", "command": {"cmd": "touch ~/bp/data/stamp", "creates": "~/bp/data/stamp"}},
    {"name": "build", "shell": {"cmd": "echo built > ~/bp/data/build.txt", "creates": "~/bp/data/build.txt"}},
    {"name": "cleanup", "command": {"cmd": "rm ~/bp/data/stamp.old", "removes": "~/bp/data/stamp.old"}},
    {"name": "packages", "apt": {"packages": ["coreutils"], "update_cache": False}},
    {"name": "no such package", "apt": {"packages": ["fleet-no-such-package"], "state": "absent"}},
    {"name": "a fake uv", "copy": {"dest": "~/bp/bin/uv", "content": "#!/bin/sh\necho 'uv 0.5.1'\n", "mode": "0755"}},
    {"name": "uv", "uv": {"install_dir": "~/bp/bin"}},
    {"name": "a venv by hand", "shell": {
        "cmd": "mkdir -p ~/bp/venv/bin && ln -s /usr/bin/python3 ~/bp/venv/bin/python && "
               "echo 'include-system-site-packages = false' > ~/bp/venv/pyvenv.cfg",
        "creates": "~/bp/venv"}},
    {"name": "venv", "venv": {"path": "~/bp/venv", "python": "3"}},
    {"name": "download what is there", "download": {
        "url": "file:///nonexistent", "dest": "~/bp/data/build.txt",
        "sha256": hashlib.sha256(b"built\n").hexdigest()}},
    {"name": "profile", "profile": {"name": "BP_HOME", "value": "~/bp", "path": "~/bp/env.sh",
                                    "source_from": "~/bp/bashrc"}},
    {"name": "check", "python": {"venv": "/usr", "code": "import sys; print('py', sys.version_info[0])"},
     "register": "check"},
    # needs the result registered just above: ends a batch
    {"name": "uses the check", "copy": {"dest": "~/bp/data/check.txt", "content": "{{ check.stdout }}"}},
    {"name": "assert", "assert": {"that": ["check.rc == 0"]}},
    {"name": "not installed", "pip": {"venv": "/usr", "packages": ["fleet-no-such-dist"], "state": "absent"}},
    {"name": "stack", "stack": {"venv": "/usr", "path": "~/bp/stack.json"}, "register": "stack"},
    {"name": "skipped", "copy": {"dest": "~/bp/never", "content": "x"}, "when": "facts.arch == 'no-such-arch'"},
    {"name": "as root", "command": {"cmd": "true", "creates": "/"}, "become": True},
    {"name": "after root", "directory": {"path": "~/bp/after"}},
    {"name": "registered results", "copy": {"dest": "~/bp/registered.json",
                                            "content": "{{ {'check': check, 'stack': stack} | tojson }}"}},
]  # fmt: skip


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def results(stdout: str) -> list[dict]:
    """Each task result as the user sees it, without the host and the time it took."""
    drop = {"host", "duration", "run_id", "ts"}
    return [{k: v for k, v in e.items() if k not in drop} for e in events(stdout) if e["event"] == "task_result"]


def commands(stdout: str) -> int:
    (recap,) = [e for e in events(stdout) if e["event"] == "recap"]
    return recap["commands"]


def tree(folder: Path) -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            kind = "-> " + str(path.readlink())
        elif path.is_dir():
            kind = "dir"
        else:
            kind = path.read_text(errors="replace")
        out.append((str(path.relative_to(folder)), oct(path.lstat().st_mode & 0o7777), kind))
    return out


@pytest.fixture
def book(tmp_path):
    (tmp_path / "node.j2").write_text("arch={{ facts.arch }} tag={{ lookup_tag }}\n")
    path = tmp_path / "book.yaml"
    play = {"hosts": "nodes", "vars": {"lookup_tag": "t1"}, "tasks": TASKS}
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def both(ssh_fleet, inventory: Path, book: Path, *extra: str) -> tuple[str, str]:
    """Run the play batched on one host and unbatched on the other; the same results or fail."""
    batched = run_fleet("run", book, "-i", inventory, "--json", "--diff", "-l", BATCHED, *extra)
    unbatched = run_fleet("run", book, "-i", inventory, "--json", "--diff", "-l", UNBATCHED, "--no-batch", *extra)
    assert batched.returncode == 0, batched.stdout[-3000:] + batched.stderr
    assert unbatched.returncode == 0, unbatched.stdout[-3000:] + unbatched.stderr
    assert results(batched.stdout) == results(unbatched.stdout)
    homes = [ssh_fleet.host(h).home / WORK for h in (BATCHED, UNBATCHED)]
    assert tree(homes[0]) == tree(homes[1])
    return batched.stdout, unbatched.stdout


def test_every_task_type_gives_the_same_results_batched_and_unbatched(ssh_fleet, ssh_inventory, book):
    for host in (BATCHED, UNBATCHED):
        shutil.rmtree(ssh_fleet.host(host).home / WORK, ignore_errors=True)

    first, first_alone = both(ssh_fleet, ssh_inventory, book)
    statuses = [r["status"] for r in results(first)]
    assert statuses.count("changed") >= 15 and "failed" not in statuses
    by_name = {r["task"]: r for r in results(first)}
    assert by_name["same content by copy"]["status"] == "ok"  # it saw what the shell task wrote
    assert by_name["download what is there"]["status"] == "ok"
    home = ssh_fleet.host(BATCHED).home / WORK
    assert (home / "conf/env.sh").read_text() == "mode = prod\ntag = t1\n"  # the second line saw the first
    registered = json.loads((home / "registered.json").read_text())
    assert registered["check"]["stdout"] == "py 3" and registered["check"]["rc"] == 0
    assert registered["check"]["stdout_lines"] == ["py 3"]  # as ansible-core registers a command
    assert commands(first) < commands(first_alone)

    both(ssh_fleet, ssh_inventory, book)  # the registered results now say "ok" where they said "changed"
    converged, converged_alone = both(ssh_fleet, ssh_inventory, book)
    assert {r["status"] for r in results(converged)} == {"ok", "skipped"}
    # batches: facts + probes up to the command that always runs | probes to the task that needs
    # `check` | probes to the task that runs as root | its probe | the rest; plus the command
    assert commands(converged) == 6 < commands(converged_alone)

    # Changed by hand in the middle: a task in the middle changes, the tasks after it see it.
    for host in (BATCHED, UNBATCHED):
        work = ssh_fleet.host(host).home / WORK
        (work / "conf/app.conf").write_text("[app]\nworkers = 2\n")
        (work / "conf/env.sh").write_text("mode = dev\n")
        (work / "data/build.txt").unlink()
        (work / "data/stamp.old").write_text("old\n")
        (work / "venv/pyvenv.cfg").write_text("include-system-site-packages = true\n")
    middle, _ = both(ssh_fleet, ssh_inventory, book)
    changed = [r["task"] for r in results(middle) if r["status"] == "changed"]
    assert changed == [
        "config", "env line", "second line, own env", "build", "cleanup", "venv",
    ], changed  # fmt: skip
    by_name = {r["task"]: r for r in results(middle)}
    assert by_name["download what is there"]["status"] == "ok"  # it saw the rebuilt file

    (book.parent / "node.j2").write_text("arch={{ facts.arch }} changed\n")
    checked, _ = both(ssh_fleet, ssh_inventory, book, "--check")
    assert [r["task"] for r in results(checked) if r["status"] == "changed"] == ["template"]


def test_a_failed_probe_fails_its_task_with_the_probes_reason(ssh_fleet, ssh_inventory, tmp_path):
    """sudo refusing (here: an unknown become user) is not a state to plan from."""
    tasks = [
        {"name": "fine", "directory": {"path": "~"}},
        {"name": "refused", "copy": {"dest": "/tmp/never", "content": "x"}, "become": True,
         "become_user": "fleet-no-such-user"},
        {"name": "never reached", "directory": {"path": "~/bp-never"}},
    ]  # fmt: skip
    book = tmp_path / "fail.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "nodes", "tasks": tasks}], sort_keys=False))
    outputs = []
    for flag in ((), ("--no-batch",)):
        run = run_fleet("run", book, "-i", ssh_inventory, "--json", "-l", BATCHED, *flag)
        assert run.returncode == 2, run.stdout + run.stderr
        outputs.append(results(run.stdout))
    assert outputs[0] == outputs[1]
    refused = next(r for r in outputs[0] if r["task"] == "refused")
    assert refused["status"] == "failed"
    assert refused["message"].startswith("could not look at the host (probe exit 1): sudo: unknown user fleet-no-such")
    assert "never reached" not in [r["task"] for r in outputs[0]]


def test_a_probe_that_runs_out_of_time_in_a_batch_runs_alone_under_its_own_limit(tmp_path):
    """The batch runs under its shortest limit (here the slow check's 1 s): the quick probe before
    the check is answered by the batch, the check runs again alone and times out on its own, and
    the results are those of an unbatched run."""
    (tmp_path / "inv").mkdir()
    inventory = {"all": {"children": {"nodes": {"hosts": {"localhost": {"connection": "local"}}}}}}
    (tmp_path / "inv" / "hosts.yaml").write_text(yaml.safe_dump(inventory))
    tasks = [
        {"name": "quick", "directory": {"path": str(tmp_path)}},
        {"name": "slow check", "python": {"venv": "/usr", "code": "import time; time.sleep(4)"}, "timeout": 1},
    ]
    book = tmp_path / "slow.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "nodes", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    runs = [run_fleet("run", book, "-i", tmp_path / "inv", "--json", *flag) for flag in ((), ("--no-batch",))]
    assert [r.returncode for r in runs] == [2, 2], runs[0].stdout + runs[0].stderr
    assert results(runs[0].stdout) == results(runs[1].stdout)
    assert [(r["task"], r["status"]) for r in results(runs[0].stdout)] == [("quick", "ok"), ("slow check", "failed")]
    assert "timed out after 1s" in results(runs[0].stdout)[1]["message"]
    assert (commands(runs[0].stdout), commands(runs[1].stdout)) == (2, 2)  # the batch, then the check alone


def test_a_first_run_observes_each_task_once_not_again_after_every_change(ssh_fleet, ssh_inventory, tmp_path):
    """On clean hosts every task changes: after each change, the probes of the tasks after it
    would only see the host before their own change, so they are not sent with it. Counted from
    the run log (every request's script): each task's probe is in the first look once, and then
    asked alone at its turn (before: 8 + 8 + 7 + ... + 1 probes in batches)."""
    count = 8
    tasks = [{"name": "folder", "directory": {"path": "~/fr", "mode": "0755"}}]
    tasks += [{"name": f"file {i}", "copy": {"dest": f"~/fr/f{i}", "content": f"{i}\n"}} for i in range(count - 1)]
    book = tmp_path / "first.yaml"
    book.write_text(yaml.safe_dump([{"hosts": BATCHED, "gather_facts": False, "tasks": tasks}], sort_keys=False))

    def run() -> tuple[int, int]:
        done = run_fleet("run", book, "-i", ssh_inventory, "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        (start,) = [e for e in events(done.stdout) if e["event"] == "run_start"]
        log = (Path(start["log_dir"]) / f"{BATCHED}.log").read_text()
        sections = re.findall(r"^printf '\\n@@fleet-probe-[0-9a-f]+ %s", log, re.M)
        looks = re.findall(r"^set -- (.*)$", log, re.M)  # one look at many files (fleet/filelook.py)
        in_batches = len(sections) - len(looks) + sum(len(shlex.split(paths)) for paths in looks)
        return in_batches, sum(e["status"] == "changed" for e in events(done.stdout) if e["event"] == "task_result")

    assert run() == (count, count)  # the first look only; later probes went alone
    assert run() == (count, 0)  # converged: the first look, and nothing else


@pytest.mark.parametrize("kind", [str, bytes])
def test_marker_lines_split_as_the_regular_expression_splits_them(kind):
    """Batch output is split at its marker lines without compiling a pattern per batch; on
    outputs with whole, cut and look-alike markers that gives what re.split gives."""
    import random
    import re

    from fleet.batch import _marked

    marker = "@@fleet-probe-0123abcd"
    bits = ["a", "\n", f"\n{marker} 0\n", f"\n{marker} 17\n", f"\n{marker} ", f"\n{marker} x\n", "7", "\n@@other 0\n"]
    rng = random.Random(7)
    pattern = re.compile(rf"\n{re.escape(marker)} (\d+)\n")
    for _ in range(2000):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(0, 12)))
        want = pattern.split(text)
        if kind is bytes:
            assert _marked(text.encode(), f"\n{marker} ".encode()) == [w.encode() for w in want], text
        else:
            assert _marked(text, f"\n{marker} ") == want, text


def test_probes_run_without_a_subshell_leave_nothing_behind(ssh_fleet, ssh_inventory):
    """The facts, the creates checks, the look at many files and the package check run in the
    batch's own shell (no fork each); a probe after them sees no variable, function or argument
    they used, exactly as when it runs alone."""
    from fleet.batch import Batch, ProbeCall
    from fleet.connection import connect
    from fleet.facts import facts_probe
    from fleet.filelook import file_script
    from fleet.inventory import load_inventory
    from fleet.tasks.apt import Apt
    from fleet.tasks.command import Command

    names = "_o _n _l _f _b _q _g _p _out _ok n ks k p s b size mode type h f"  # f: set by the agent's own runner
    report = (
        f'for _v in {names}; do eval "[ -z \\"\\${{$_v+x}}\\" ]" || echo "variable $_v"; done\n'
        'for _v in o a s l _fleet_look _fleet_dpkg; do command -v $_v >/dev/null && echo "function $_v"; done\n'
        'echo "arguments $#"\n'
    )
    facts = facts_probe(frozenset({"system"}))
    creates = Command(Command.Args(cmd="true", creates="~/.bashrc", removes="~/nothing")).probe()
    packages = Apt(Apt.Args(packages=["coreutils"])).probe()
    paths = ["~/.bashrc", "~", "~/nothing"]
    calls = [
        ProbeCall(facts.script, inline=facts.inline),
        ProbeCall(creates.script, inline=creates.inline),
        *(ProbeCall(file_script(p), path=p) for p in paths),
        ProbeCall(packages.script, inline=packages.inline),
        ProbeCall(report),
    ]
    batch = Batch.of(calls)
    assert batch.script().count("(\n") == 1 + batch.script().count("| (\n")  # only the report forks
    conn = connect("node-01", load_inventory(ssh_inventory).host("node-01").vars)
    try:
        done = batch.split(conn.run(batch.script(), **batch.run_kwargs()))
        assert all(r is not None and r.exited == 0 for r in done), done
        assert done[-1].stdout == conn.run(report).stdout
        assert done[-1].stdout.replace("variable f\n", "") == "arguments 0\n"
        alone = [conn.run(c.script) for c in calls[:-1]]
        for call, got, own in zip(calls, done, alone, strict=False):
            assert (got.stdout, got.exited) == (own.stdout, own.exited), call.script[:60]
    finally:
        conn.close()
