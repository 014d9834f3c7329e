"""Variables are templated lazily and recursively wherever they come from, on real sshd hosts:
the defect where `project_dir: "{{ home }}/tes_grpo_trl"` created a directory named `{{ home }}`
must never come back. Boolean keywords are strict; errors visible at load stop the run before
the first host is touched."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import run_fleet

pytestmark = pytest.mark.ssh


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def with_host_vars(ssh_fleet, inv, **per_host):
    """Add host vars (a function of the host) to the test inventory's hosts."""
    data = yaml.safe_load((inv / "hosts.yaml").read_text())
    hosts = data["all"]["children"]["nodes"]["hosts"]
    for host in ssh_fleet.hosts:
        hosts[host.name].update({k: f(host) for k, f in per_host.items()})
    (inv / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return inv


def test_play_vars_using_inventory_vars_are_rendered_on_the_host(ssh_fleet, ssh_inventory, tmp_path):
    inv = with_host_vars(ssh_fleet, ssh_inventory, home=lambda h: str(h.home))
    (tmp_path / "more.yaml").write_text('venv_dir: "{{ project_dir }}/.venv"\n')
    book = tmp_path / "book.yaml"
    book.write_text(
        """\
- hosts: nodes
  gather_facts: false
  vars:
    project_dir: "{{ home }}/tes_grpo_trl"
    marker: "{{ project_dir }}/{{ suffix }}"
  vars_files: [more.yaml]
  defaults:
    suffix: "from-{{ inventory_hostname }}"
  tasks:
    - directory: {path: "{{ project_dir }}"}
    - directory: {path: "{{ venv_dir }}"}
    - command: "echo {{ marker }}"
      register: said
    - copy: {dest: "{{ project_dir }}/said.txt", content: "{{ said.stdout }} {{ extra }}"}
"""
    )
    result = run_fleet("run", book, "-i", inv, "--json", "-e", "extra={{ suffix }}-e")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "{{" not in result.stdout and "{{" not in result.stderr
    for host in ssh_fleet.hosts:
        project = host.home / "tes_grpo_trl"
        assert (project / ".venv").is_dir()
        said = (project / "said.txt").read_text()
        assert said == f"{project}/from-{host.name} from-{host.name}-e"  # stdout without its newline, as in Ansible
        assert not list(project.rglob("*{*")) and not list(host.home.glob("{*")), list(host.home.rglob("*{*"))


@pytest.mark.parametrize(
    ("play_vars", "needle"),
    [
        ({"a": "{{ b }}", "b": "x{{ a }}"}, "variable cycle: a -> b -> a"),
        ({"a": "{{ a }}"}, "variable cycle: a -> a"),
        ({"a": "{{ b }}/x", "b": "{{ nowhere }}"}, "variable 'a': variable 'b': undefined variable 'nowhere'"),
        ({"a": "{{ b }}", "b": "{% raw %}{{ left }}{% endraw %}"}, "variable 'a' still holds '{{' after rendering"),
    ],
)
def test_cycles_undefined_and_leftover_templates_fail_naming_the_variable(
    ssh_fleet, ssh_inventory, tmp_path, play_vars, needle
):
    book = tmp_path / "book.yaml"
    target = "{{ a }}"
    plays = [{"hosts": "nodes", "gather_facts": False, "vars": play_vars, "tasks": [{"directory": {"path": target}}]}]
    book.write_text(yaml.safe_dump(plays))
    before = {h.name: set(h.home.iterdir()) for h in ssh_fleet.hosts}
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    failed = [e for e in events(result.stdout) if e.get("status") == "failed"]
    assert len(failed) == len(ssh_fleet.hosts)
    assert all(needle in e["message"] for e in failed), failed[0]["message"]
    for host in ssh_fleet.hosts:
        assert set(host.home.iterdir()) == before[host.name]  # nothing created


def test_quoted_false_is_false_and_templates_give_booleans(ssh_fleet, ssh_inventory, tmp_path):
    book = tmp_path / "book.yaml"
    book.write_text(
        """\
- hosts: nodes
  gather_facts: "false"
  vars: {as_root: "no"}
  tasks:
    - command: id -un
      become: "false"
      register: plain
    - command: id -un
      become: "{{ as_root }}"
      register: templated
    - command: id -un
      become: "{{ not as_root | bool }}"
      register: rooted
    - copy:
        dest: ~/users.txt
        content: "{{ plain.stdout | trim }} {{ templated.stdout | trim }} {{ rooted.stdout | trim }}"
    - command: "false"
      ignore_errors: "false"
    - command: "echo not reached"
"""
    )
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    tasks = [e for e in events(result.stdout) if e["event"] == "task_result"]
    by_host = {h.name: [e for e in tasks if e["host"] == h.name] for h in ssh_fleet.hosts}
    for host in ssh_fleet.hosts:
        statuses = [e["status"] for e in by_host[host.name]]
        assert statuses == ["changed", "changed", "changed", "changed", "failed"], statuses
        assert (host.home / "users.txt").read_text() == f"{host.user} {host.user} root"
    assert "not reached" not in result.stdout


@pytest.mark.parametrize(
    ("keyword", "value", "needle"),
    [
        ("become", "'flase'", "`become:` must be a boolean (true/false, yes/no), got 'flase'"),
        ("ignore_errors", "'nope'", "`ignore_errors:` must be a boolean"),
        ("no_log", "2", "`no_log:` must be a boolean"),
        ("when", "'a =! b'", "`when:`: Jinja syntax error"),
        ("register", "[a, b]", "`register:` takes one variable name, got ['a', 'b']"),
    ],
)
def test_bad_keywords_stop_the_run_before_any_host_is_touched(
    ssh_fleet, ssh_inventory, tmp_path, keyword, value, needle
):
    book = tmp_path / "book.yaml"
    book.write_text(
        "- hosts: nodes\n  gather_facts: false\n  tasks:\n"
        "    - directory: {path: ~/touched-first}\n"
        + "    - command: 'true'\n" * 7
        + f"    - command: 'true'\n      {keyword}: {value}\n"
    )
    result = run_fleet("run", book, "-i", ssh_inventory)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{book}:12: " in result.stderr and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    for host in ssh_fleet.hosts:
        assert not (host.home / "touched-first").exists()


def test_a_value_read_before_it_was_known_is_rendered_again_at_the_tasks_turn(ssh_fleet, ssh_inventory, tmp_path):
    """Looking ahead, facts and what later tasks register are not known yet; `| default` and `is
    defined` read them without failing. A task whose templates read such a value renders again
    at its turn (the look ahead's rendering is kept only where nothing unknown was read), so the
    file holds the real values, batched or not, on the first run and the re-run alike."""
    book = tmp_path / "book.yaml"
    book.write_text(
        """\
- hosts: nodes
  tasks:
    - directory: {path: ~/lookahead}
      register: made
    - copy: {dest: ~/lookahead/arch.txt, content: "{{ (facts | default({'arch': 'no-facts'})).arch }}\\n"}
    - copy: {dest: ~/lookahead/made.txt, content: "{{ (made | default({'failed': 'unknown'})).failed }}\\n"}
    - copy: {dest: ~/lookahead/defined.txt, content: "{{ made is defined }}\\n"}
      when: facts is defined
"""
    )
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    for flags in ((), (), ("--no-batch",)):
        result = run_fleet("run", book, "-i", ssh_inventory, "--json", *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        for host in ssh_fleet.hosts:
            assert (host.home / "lookahead" / "arch.txt").read_text() == f"{arch}\n"
            assert (host.home / "lookahead" / "made.txt").read_text() == "False\n"
            assert (host.home / "lookahead" / "defined.txt").read_text() == "True\n"
