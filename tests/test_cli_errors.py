"""Bad input gets one line naming the file (and line) and what to do, exit code 1, no traceback.

Most cases call the CLI's main() in this process (an unexpected exception would fail the test just
as a traceback would); a few run the real `fleet` command in a subprocess to check the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_fleet

from fleet.cli import main

LOCAL = str(REPO / "inventories" / "local")

PLAYBOOKS = {
    "malformed.yaml": """\
        - hosts: all
          tasks:
            - name: broken
              command: [echo
        """,
    "unknown_task.yaml": """\
        - hosts: all
          tasks:
            - name: x
              frobnicate: {a: 1}
        """,
    "typo_keyword.yaml": """\
        - hosts: all
          tasks:
            - name: x
              command: "true"
              registr: out
        """,
    "missing_arg.yaml": """\
        - hosts: all
          tasks:
            - name: no dest
              copy: {content: hi}
        """,
    "unknown_arg.yaml": """\
        - hosts: all
          tasks:
            - name: owner
              copy: {dest: /tmp/x, content: hi, owner: root}
        """,
    "unknown_play_key.yaml": """\
        - hosts: all
          taks: []
        """,
    "no_hosts.yaml": """\
        - name: forgot hosts
          tasks: []
        """,
    "no_match.yaml": """\
        - hosts: gpu-nodes
          tasks: []
        """,
    "bad_serial.yaml": """\
        - hosts: all
          serial: some
          tasks: []
        """,
    "vars_list.yaml": """\
        - hosts: all
          vars: [a, b]
          tasks: []
        """,
    "bad_timeout.yaml": """\
        - hosts: all
          tasks:
            - name: slow
              command: "true"
              timeout: soon
        """,
    "not_a_list.yaml": """\
        hosts: all
        """,
    "bad_python.py": """\
        from fleet import Play, Task

        PLAYS = [Play(tasks=[
            Task("copy", {"content": "x"}),
        ])]
        """,
    "broken_python.py": """\
        import no_such_module_here
        """,
}


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("books")
    for name, text in PLAYBOOKS.items():
        (root / name).write_text(textwrap.dedent(text))
    (root / "vars.yaml").write_text("- a list\n- not a mapping\n")
    (root / "malformed_vars.yaml").write_text("a: [1\n")
    (root / "ok.yaml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    return root


def fleet(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fleet: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("book", "needles"),
    [
        ("malformed.yaml", ["malformed.yaml:5: malformed YAML"]),
        ("unknown_task.yaml", ["unknown_task.yaml:3: task 'x': unknown task type 'frobnicate'", "known: apt"]),
        ("typo_keyword.yaml", ["typo_keyword.yaml:3: task 'x': unknown task type or keyword 'registr'"]),
        ("missing_arg.yaml", ["missing_arg.yaml:3: task 'no dest': copy: missing required argument 'dest'"]),
        ("unknown_arg.yaml", ["unknown_arg.yaml:3: task 'owner': copy: unknown argument 'owner'", "allowed:"]),
        ("unknown_play_key.yaml", ["unknown_play_key.yaml:1: unknown play key 'taks'"]),
        ("no_hosts.yaml", ["no_hosts.yaml:1: play has no `hosts:`"]),
        ("no_match.yaml", ["no_match.yaml:1: host pattern 'gpu-nodes' matches no host", "fleet inventory"]),
        ("bad_serial.yaml", ["bad_serial.yaml:1: serial must be at least 1"]),
        ("vars_list.yaml", ["vars_list.yaml:1: `vars:` must be a mapping"]),
        ("bad_timeout.yaml", ["bad_timeout.yaml:3: task 'slow': timeout must be a number of seconds"]),
        ("not_a_list.yaml", ["not_a_list.yaml: a playbook is a list of plays"]),
        ("bad_python.py", ["bad_python.py:4: task 'copy': copy: missing required argument 'dest'"]),
        ("broken_python.py", ["broken_python.py: ModuleNotFoundError: No module named 'no_such_module_here'"]),
        ("missing.yaml", ["playbook", "missing.yaml does not exist"]),
    ],
)
def test_bad_playbooks(capsys, books, book, needles):
    code, out, err = fleet(capsys, "run", books / book, "-i", LOCAL)
    assert code == 1
    line = one_line_error(err)
    for needle in needles:
        assert needle in line
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "ok.yaml", "-i", "no/such/inventory"], ["inventory no/such/inventory does not exist"]),
        (["run", "ok.yaml", "-i", LOCAL, "--limit", "gpu*"], ["host pattern 'gpu*' matches no host"]),
        (["facts", "-i", LOCAL, "--hosts", "!localhost"], ["host pattern '!localhost' matches no host"]),
        (["inventory", "-i", LOCAL, "--hosts", "node-99"], ["host pattern 'node-99' matches no host"]),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "novalue"], ["-e 'novalue': expected key=value or @file.yaml"]),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "=x"], ["-e '=x': expected key=value"]),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "@nothere.yaml"], ["nothere.yaml: no such file"]),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "@vars.yaml"], ["vars.yaml: extra vars file must be a mapping"]),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "@malformed_vars.yaml"], ["malformed_vars.yaml:2: malformed YAML"]),
        (["run", "ok.yaml", "-i", LOCAL, "--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
)
def test_bad_command_lines(capsys, books, monkeypatch, args, needles):
    monkeypatch.chdir(books)
    code, out, err = fleet(capsys, *args)
    assert code == 1
    line = one_line_error(err)
    for needle in needles:
        assert needle in line
    assert "Traceback" not in out + err


def test_bad_inventory_is_bad_input(capsys, tmp_path, books):
    # A static unknown connection type is refused before any host is touched...
    (tmp_path / "hosts.yaml").write_text("all:\n  hosts:\n    n1: {connection: telnet}\n    n2: {connection: local}\n")
    code, out, err = fleet(capsys, "run", books / "ok.yaml", "-i", tmp_path)
    assert code == 1 and "host n1: unknown connection type 'telnet' (use ssh or local)" in one_line_error(err)
    # ...one that a template gives only when the host is reached is that host's failure; the others run.
    hosts = "all:\n  hosts:\n    n1: {connection: '{{ kind }}', kind: telnet}\n    n2: {connection: local}\n"
    (tmp_path / "hosts.yaml").write_text(hosts)
    code, out, err = fleet(capsys, "run", books / "ok.yaml", "-i", tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "n1: host n1: unknown connection type 'telnet' (use ssh or local)" in out
    failed_column = [line.split()[::3] for line in out.splitlines() if line.startswith(" n")]
    assert failed_column == [["n1", "1", "0"], ["n2", "0", "0"]]  # host, failed, commands
    (tmp_path / "hosts.yaml").write_text("all:\n  hosts:\n    n1: {connection: local\n")
    code, _out, err = fleet(capsys, "inventory", "-i", tmp_path)
    assert code == 1 and f"{tmp_path / 'hosts.yaml'}:4: malformed YAML" in one_line_error(err)


def test_undefined_variable_fails_the_task_naming_file_line_and_variable(capsys, tmp_path):
    book = tmp_path / "undefined.yaml"
    book.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: fine\n      command: 'true'\n"
        "    - name: uses it\n      command: 'echo {{ nowhere_defined }}'\n"
        "    - name: not reached\n      command: 'true'\n"
    )
    code, out, err = fleet(capsys, "run", book, "-i", LOCAL)
    assert code == 2  # a failed task on a host, not bad input to the command line
    (failed,) = [line for line in out.splitlines() if line.startswith("failed")]
    assert failed.endswith(f"uses it  {book}:6: undefined variable 'nowhere_defined'")
    assert "not reached" not in out and "Traceback" not in out + err


@pytest.mark.parametrize(
    ("task", "needle"),
    [
        ("command: 'true'\n      environment: {BAD-NAME: 1}", ":5: `environment:` name 'BAD-NAME' is not a valid"),
        (
            "command: 'true'\n      environment: {'{{ n }}': 1}",
            ":5: `environment:` name '{{ n }}' is a template; names",
        ),
        ("line: {path: /tmp/x, line: a, regexp: '(('}", ":5: task 'odd': regexp '((' is not a valid regular"),
    ],
)
def test_odd_task_input_is_refused_before_any_task_runs(capsys, tmp_path, task, needle):
    marker = tmp_path / "task1-ran"
    book = tmp_path / "odd.yaml"
    book.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - command: 'touch {marker}'\n"
        f"    - name: odd\n      {task}\n      ignore_errors: true\n"
    )
    code, _, err = fleet(capsys, "run", book, "-i", LOCAL)
    assert code == 1 and not marker.exists()
    assert f"{book}{needle}" in err, err


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "malformed.yaml", "-i", LOCAL], 1, "malformed.yaml:5: malformed YAML"),
        (["run", "ok.yaml", "-i", "nowhere"], 1, "inventory nowhere does not exist"),
        (["run", "ok.yaml", "-i", LOCAL, "-e", "bad"], 1, "-e 'bad': expected key=value"),
    ],
)
def test_the_real_command_prints_one_line_and_no_traceback(books, args, code, needle):
    result = run_fleet(*args, cwd=books)
    assert result.returncode == code
    assert needle in one_line_error(result.stderr) and result.stdout == ""
    assert "Traceback" not in result.stdout + result.stderr


def test_deep_yaml_is_one_line_not_a_recursion_traceback(tmp_path):
    book = tmp_path / "deep.yaml"
    book.write_text("- hosts: all\n  vars: {deep: " + "[" * 5000 + "]" * 5000 + "}\n  tasks: []\n")
    result = run_fleet("run", book, "-i", LOCAL)
    assert result.returncode == 1
    assert result.stderr == f"fleet: error: {book}: YAML nested too deeply to be a playbook, inventory or vars file\n"


def test_unknown_tag_is_an_error_listing_the_tags(capsys, tmp_path):
    book = tmp_path / "tags.yaml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - command: 'true'\n      tags: [torch, uv]\n")
    code, out, err = fleet(capsys, "run", book, "-i", LOCAL, "--tags", "trch")
    assert code == 1 and out == ""
    assert err == f"fleet: error: {book}: no task has the tag 'trch' (tags in this playbook: torch, uv)\n"
    code, out, err = fleet(capsys, "run", book, "-i", LOCAL, "--tags", "torch,always")
    assert code == 0, err


@pytest.mark.parametrize(
    ("hostvars", "needle"),
    [
        ("port: abc", "host bad: port 'abc' is not a TCP port number"),
        ("host_key_checking: 'no'", "host bad: host_key_checking 'no' is not strict or accept-new"),
        ("connect_timeout: soon", "host bad: connect_timeout 'soon' is not a number of seconds"),
    ],
)
def test_a_bad_host_variable_stops_the_run_before_any_host_is_touched(capsys, tmp_path, hostvars, needle):
    marker = tmp_path / "touched"
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yaml").write_text(
        "all:\n  hosts:\n    good: {connection: local}\n    bad: {" + hostvars + "}\n"
    )
    book = tmp_path / "book.yaml"
    book.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - command: 'touch {marker}'\n")
    code, _, err = fleet(capsys, "run", book, "-i", tmp_path / "inv")
    assert code == 1 and not marker.exists()
    assert needle in err and err.count("\n") == 1


def test_a_python_playbook_with_a_misspelt_boolean_is_refused_at_load(capsys, tmp_path):
    book = tmp_path / "book.py"
    book.write_text(
        "from fleet import Play, Task\n"
        "PLAYS = [Play(hosts='all', gather_facts=False, tasks=[Task('command', {'cmd': 'true'}, become='flase')])]\n"
    )
    code, out, err = fleet(capsys, "run", book, "-i", LOCAL)
    assert code == 1 and out == ""
    assert f"{book}:2: task 'command': `become:` must be a boolean (true/false, yes/no), got 'flase'" in err


@pytest.mark.parametrize(
    ("task", "needle"),
    [
        ("template: {src: nowhere.j2, dest: /tmp/x}", "template source file {dir}/nowhere.j2 does not exist"),
        ("template: {src: broken.j2, dest: /tmp/x}", "template {dir}/broken.j2:2: Jinja syntax error"),
        ("copy: {dest: /tmp/x, content: a, mode: 0644}", "mode 420 is a number (YAML reads 0644 as one)"),
        ("copy: {dest: /tmp/x, content: a, mode: '9z'}", "mode '9z' is not an octal mode"),
        ("directory: {path: [1, 2]}", "directory: argument 'path': Input should be a valid string"),
        ("command: 'echo {{ x | }}'", "`command:`: Jinja syntax error"),
    ],
)
def test_what_a_playbook_gets_wrong_is_found_before_task_one_runs(capsys, tmp_path, task, needle):
    marker = tmp_path / "task1-ran"
    (tmp_path / "broken.j2").write_text("fine {{ a }}\n{% if %}\n")
    book = tmp_path / "book.yaml"
    book.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - command: 'touch {marker}'\n    - {task}\n")
    code, _, err = fleet(capsys, "run", book, "-i", LOCAL)
    assert code == 1 and not marker.exists()
    assert needle.format(dir=tmp_path) in err and err.count("\n") == 1, err


def test_the_process_ends_at_once_with_all_its_output_and_its_exit_code(tmp_path):
    """`python -m fleet.cli` (and the console script, `fleet.cli:run`) ends the process without
    the interpreter's teardown: everything it wrote still arrives whole through a pipe, and the
    exit code is main()'s, on success and on bad input."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[nodes]\n" + "".join(f"node-{i:05d} ansible_host=127.0.0.1\n" for i in range(5000)))
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    done = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "inventory", "-i", str(inventory), "--json"],
        capture_output=True, text=True, timeout=120, env=buffered,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) > 256 * 1024  # several times what a pipe holds
    names = {json.loads(line).get("host") for line in done.stdout.splitlines()}
    assert {f"node-{i:05d}" for i in range(5000)} <= names
    bad = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "inventory", "-i", str(tmp_path / "missing.ini")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("fleet: error:") and "Traceback" not in bad.stderr
    assert main(["inventory", "-i", str(tmp_path / "missing.ini")]) == 1  # in-process: main() returns it
