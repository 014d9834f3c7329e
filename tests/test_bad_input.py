"""The bad-input corpus: each case is a run whose input is wrong somewhere *after* a first task
that would change every host (it writes ~/applied-<case>.txt). Each must give exit code 1, one
line on stderr, no traceback, and leave no trace on any host (checked on the hosts themselves).

Cases run the CLI's main() in this process (an unexpected exception fails the case just as a
traceback would); a sample runs the real command too. The counts end in one summary line."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import run_fleet
from faultkit import summary

from fleet.cli import main

pytestmark = pytest.mark.ssh


@dataclass(frozen=True)
class Case:
    id: str
    tasks: list | None = None  # tasks after the marker task
    play: dict | None = None  # play keys (besides hosts/tasks) of the marker's play
    plays: list | None = None  # plays after the marker's play
    text: str | None = None  # raw playbook text after the marker's play (YAML-level faults)
    files: dict = field(default_factory=dict)  # more files beside the playbook
    inventory: dict = field(default_factory=dict)  # files in the inventory folder (relative path -> text)
    args: tuple = ()  # extra CLI arguments
    python: str | None = None  # a Python playbook instead


def t(name: str, **task) -> dict:
    return {"name": name, **task}


CASES = [
    # ---- task types and their arguments -----------------------------------------------------------
    Case("unknown-task-type", tasks=[t("x", frobnicate={"a": 1})]),
    Case("two-task-types", tasks=[t("x", command="true", shell="true")]),
    Case("no-task-type", tasks=[t("x")]),
    Case("typo-keyword", tasks=[t("x", command="true", registr="out")]),
    Case("args-not-mapping", tasks=[t("x", copy="dest=/tmp/x")]),
    Case("args-a-list", tasks=[t("x", copy=["a"])]),
    Case("unknown-argument", tasks=[t("x", copy={"dest": "~/x", "content": "a", "owner": "root"})]),
    Case("missing-argument", tasks=[t("x", copy={"content": "a"})]),
    Case("copy-src-missing", tasks=[t("x", copy={"src": "nope.txt", "dest": "~/x"})]),
    Case("template-src-missing", tasks=[t("x", template={"src": "nope.j2", "dest": "~/x"})]),
    Case("template-syntax", tasks=[t("x", template={"src": "bad.j2", "dest": "~/x"})], files={"bad.j2": "{% if %}"}),
    Case("mode-not-octal", tasks=[t("x", copy={"dest": "~/x", "content": "a", "mode": "rwxr--r--"})]),
    Case("mode-digit-8", tasks=[t("x", copy={"dest": "~/x", "content": "a", "mode": "0689"})]),
    Case("mode-too-big", tasks=[t("x", copy={"dest": "~/x", "content": "a", "mode": "77777"})]),
    Case("directory-mode", tasks=[t("x", directory={"path": "~/d", "mode": "abc"})]),
    Case("command-cmd-mapping", tasks=[t("x", command={"cmd": {"a": 1}})]),
    Case("command-unknown-arg", tasks=[t("x", command={"cmd": "true", "chdirr": "/"})]),
    Case("shell-executable-list", tasks=[t("x", shell={"cmd": "true", "executable": ["bash"]})]),
    Case("apt-packages-number", tasks=[t("x", apt={"packages": 5})]),
    Case("assert-no-that", tasks=[t("x", **{"assert": {}})]),
    Case("pip-no-packages", tasks=[t("x", pip={"venv": "~/v"})]),
    Case("copy-no-content-or-src", tasks=[t("x", copy={"dest": "~/x"})]),
    Case("line-without-line", tasks=[t("x", line={"path": "~/x"})]),
    Case("download-bad-sha", tasks=[t("x", download={"url": "http://127.0.0.1/x", "dest": "~/x", "sha256": "zz"})]),
    Case("download-dest-folder", tasks=[t("x", download={"url": "http://127.0.0.1/x", "dest": "~/dir/"})]),
    Case("loop-mapping", tasks=[t("x", command="true", loop={"a": 1})]),
    # ---- keywords ---------------------------------------------------------------------------------
    Case("become-word", tasks=[t("x", command="true", become="maybe")]),
    Case("become-number", tasks=[t("x", command="true", become=2)]),
    Case("ignore-errors-word", tasks=[t("x", command="true", ignore_errors="nope")]),
    Case("no-log-word", tasks=[t("x", command="true", no_log="hide")]),
    Case("gather-facts-word", play={"gather_facts": "sometimes"}),
    Case("play-become-word", play={"become": "si"}),
    Case("timeout-negative", tasks=[t("x", command="true", timeout=-1)]),
    Case("timeout-text", tasks=[t("x", command="true", timeout="soon")]),
    Case("timeout-zero", tasks=[t("x", command="true", timeout=0)]),
    Case("register-list", tasks=[t("x", command="true", register=["a", "b"])]),
    Case("register-bad-name", tasks=[t("x", command="true", register="1st-result")]),
    Case("register-mapping", tasks=[t("x", command="true", register={"a": 1})]),
    Case("when-syntax", tasks=[t("x", command="true", when="x ==")]),
    Case("when-unclosed", tasks=[t("x", command="true", when="(a and b")]),
    Case("loop-syntax", tasks=[t("x", command="true", loop="{{ items | }}")]),
    Case("changed-when-syntax", tasks=[t("x", command="true", changed_when="rc ==")]),
    Case("failed-when-syntax", tasks=[t("x", command="true", failed_when="{{ rc > }}")]),
    Case("tags-mapping", tasks=[t("x", command="true", tags={"a": 1})]),
    Case("env-not-mapping", tasks=[t("x", command="true", environment=["A=1"])]),
    Case("env-bad-name", tasks=[t("x", command="true", environment={"BAD-NAME": "1"})]),
    Case("env-digit-name", tasks=[t("x", command="true", environment={"1X": "1"})]),
    Case("env-space-name", tasks=[t("x", command="true", environment={"A B": "1"})]),
    Case("arg-jinja-syntax", tasks=[t("x", command="echo {{ foo ")]),
    Case("arg-jinja-block", tasks=[t("x", command="echo {% for x in y %}")]),
    Case("arg-jinja-filter", tasks=[t("x", command="echo {{ x | no_such_filter }}")]),
    Case("name-jinja-syntax", tasks=[t("x {{ ", command="true")]),
    Case("serial-negative", plays=[{"hosts": "nodes", "serial": -1, "tasks": []}]),
    Case("serial-text", plays=[{"hosts": "nodes", "serial": "half", "tasks": []}]),
    Case("secrets-not-list", play={"secrets": "wandb_key: x"}),
    # ---- plays ------------------------------------------------------------------------------------
    Case("play-not-mapping", plays=["just text"]),
    Case("play-unknown-key", plays=[{"hosts": "nodes", "taks": []}]),
    Case("play-no-hosts", plays=[{"name": "x", "tasks": []}]),
    Case("play-hosts-match-nothing", plays=[{"hosts": "gpu-nodes", "tasks": []}]),
    Case("play-hosts-bad-range", plays=[{"hosts": "node-[b:01]", "tasks": []}]),
    Case("tasks-not-list", plays=[{"hosts": "nodes", "tasks": {"a": 1}}]),
    Case("task-not-mapping", tasks=["echo hi"]),
    Case("vars-not-mapping", play={"vars": ["a"]}),
    Case("vars-file-missing", play={"vars_files": ["nope.yaml"]}),
    Case("vars-file-list", play={"vars_files": ["list.yaml"]}, files={"list.yaml": "- a\n- b\n"}),
    Case("defaults-not-mapping", play={"defaults": "x"}),
    Case("play-env-not-mapping", play={"environment": "A=1"}),
    # ---- YAML -------------------------------------------------------------------------------------
    Case("yaml-indent", text="- hosts: nodes\n  tasks:\n    - name: x\n     command: true\n"),
    Case("yaml-tab", text="- hosts: nodes\n\ttasks: []\n"),
    Case("yaml-unclosed-quote", text='- hosts: "nodes\n  tasks: []\n'),
    Case("yaml-unclosed-flow", text="- hosts: nodes\n  tasks: [\n"),
    Case("yaml-duplicate-key", text="- hosts: nodes\n  hosts: all\n  tasks: []\n"),
    Case("yaml-undefined-alias", text="- hosts: *nodes\n  tasks: []\n"),
    Case("yaml-deep", text="- hosts: nodes\n  vars: {deep: " + "[" * 5000 + "]" * 5000 + "}\n  tasks: []\n"),
    Case("yaml-scalar-document", text="\n--- just text\n"),
    # ---- inventories ------------------------------------------------------------------------------
    Case("inv-group-vars-malformed", inventory={"group_vars/nodes.yaml": "a: [1,\n"}),
    Case("inv-group-vars-list", inventory={"group_vars/nodes.yaml": "- a\n"}),
    Case("inv-host-vars-malformed", inventory={"host_vars/node-01.yaml": "a: {b\n"}),
    Case("inv-extra-group-not-mapping", inventory={"hosts.yaml+": "    other: [a, b]\n"}),
    Case("inv-unknown-group-key", inventory={"hosts.yaml+": "    other: {members: [a]}\n"}),
    Case("inv-bad-range", inventory={"hosts.yaml+": "    other: {hosts: {'x-[01:b]': null}}\n"}),
    Case("inv-empty-range", inventory={"hosts.yaml+": "    other: {hosts: {'x-[05:01]': null}}\n"}),
    Case("inv-host-vars-not-mapping", inventory={"hosts.yaml+": "    other: {hosts: {x-1: [1]}}\n"}),
    # ---- the command line -------------------------------------------------------------------------
    Case("cli-unknown-option", args=("--frobnicate",)),
    Case("cli-forks-text", args=("--forks", "many")),
    Case("cli-extra-no-equals", args=("-e", "novalue")),
    Case("cli-extra-file-missing", args=("-e", "@nope.yaml")),
    Case("cli-extra-file-list", args=("-e", "@list.yaml"), files={"list.yaml": "- a\n"}),
    Case("cli-extra-file-malformed", args=("-e", "@bad.yaml"), files={"bad.yaml": "a: [\n"}),
    Case("cli-limit-nothing", args=("--limit", "no-such-host")),
    Case("cli-tags-typo", args=("--tags", "markr")),
    Case("cli-inventory-missing", args=("-i", "no-such-inventory")),
    # ---- Python playbooks -------------------------------------------------------------------------
    Case("py-syntax", python="from fleet import Play, Task\nPLAYS = [Play(hosts='nodes', tasks=[\n"),
    Case("py-raises", python="raise RuntimeError('boom')\n"),
    Case("py-no-plays", python="X = 1\n"),
    Case("py-plays-not-plays", python="PLAYS = ['a']\n"),
    Case("py-unknown-task", python="PLAYS = [FIRST, Play(tasks=[Task('frobnicate')])]\n"),
    Case("py-bad-arg", python="PLAYS = [FIRST, Play(tasks=[Task('copy', {'dset': 'x'})])]\n"),
    Case("py-bad-mode", python="PLAYS = [FIRST, Play(tasks=[Task('copy', {'dest': 'x', 'content': '', 'mode': 9})])]"),
]

RESULTS: dict[str, bool] = {}


def marker_play(case: Case) -> dict:
    return {
        "hosts": "nodes",
        "gather_facts": False,
        **(case.play or {}),
        "tasks": [
            {"name": "marker", "copy": {"dest": f"~/applied-{case.id}.txt", "content": "applied\n"}, "tags": "marker"},
            *(case.tasks or []),
        ],
    }


def build(case: Case, ssh_fleet, tmp_path: Path) -> list[str]:
    inv = ssh_fleet.inventory(tmp_path / "inv")
    for name, text in case.inventory.items():
        if name.endswith("+"):  # appended to the generated hosts.yaml's `children:`
            target = inv / name[:-1]
            target.write_text(target.read_text() + text)
            continue
        (inv / name).parent.mkdir(parents=True, exist_ok=True)
        (inv / name).write_text(text)
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    if case.python is not None:
        marker = f"Task('copy', {{'dest': '~/applied-{case.id}.txt', 'content': 'applied'}})"
        head = f"from fleet import Play, Task\nFIRST = Play(hosts='nodes', gather_facts=False, tasks=[{marker}])\n"
        book = tmp_path / "book.py"
        book.write_text(head + case.python)
    else:
        book = tmp_path / "book.yaml"
        text = yaml.safe_dump([marker_play(case), *(case.plays or [])], sort_keys=False)
        book.write_text(text + textwrap.dedent(case.text or ""))
    args = [str(a).replace("nope.yaml", str(tmp_path / "nope.yaml")) for a in case.args]
    args = [a if not a.startswith("@") else "@" + str(tmp_path / a[1:]) for a in args]
    return ["run", str(book), "-i", str(inv), *args]


def applied(ssh_fleet, case: Case) -> list[str]:
    return [h.name for h in ssh_fleet.hosts if (h.home / f"applied-{case.id}.txt").exists()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_any_host_changes(case, ssh_fleet, tmp_path, capsys):
    RESULTS[case.id] = False
    try:
        code = main(build(case, ssh_fleet, tmp_path))
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    hosts = applied(ssh_fleet, case)
    assert code == 1, f"exit {code}; stdout: {out[-800:]} stderr: {err[-800:]}"
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    assert hosts == [], f"applied on {hosts} before the error: {err}"
    RESULTS[case.id] = True


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("yaml-deep", "register-list", "py-raises")])
def test_the_real_command_refuses_the_same_way(case, ssh_fleet, tmp_path):
    result = run_fleet(*build(case, ssh_fleet, tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert applied(ssh_fleet, case) == []


def test_the_harness_sees_what_a_good_run_applies(ssh_fleet, tmp_path):
    """The control: the same playbook without the fault applies its marker on every host."""
    case = Case("control")
    assert main(build(case, ssh_fleet, tmp_path)) == 0
    assert applied(ssh_fleet, case) == [h.name for h in ssh_fleet.hosts]
    for host in ssh_fleet.hosts:
        (host.home / "applied-control.txt").unlink()


def test_corpus_summary():
    """Runs last in this module: the figures for the README (of the cases this session ran)."""
    passed = sum(RESULTS.values())
    summary(
        f"bad-input corpus: {len(RESULTS)} of {len(CASES)} cases run, {passed} refused with exit 1 and one "
        f"line, no traceback, nothing applied on any host; {len(RESULTS) - passed} not"
    )
    assert len(CASES) >= 80
    assert passed == len(RESULTS)
