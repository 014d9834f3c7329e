"""A play gathers the facts it names, and a fact it did not gather fails loudly where it is used.

The groups and what names them are fleet/factuse.py; the runs are on real sshd hosts, and what
each run's first request gathered is read from its run log (the script sent)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_fleet

from fleet.facts import Facts, NotGathered, PartialFacts, facts_view
from fleet.factuse import ALL_GROUPS, groups_named
from fleet.templating import TemplateError, render

HOST = "node-02"
SECTIONS = {"system": "a arch;", "resources": "s cpus;", "tools": "s python;", "gpu": "s smi;"}


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("{{ facts.arch }}", {"system"}),
        ("{{ facts['gpus'] | length }} {{ facts.python }}", {"system", "gpu", "tools"}),
        ('{% if facts["disk_free_bytes"] > 0 %}{{ facts . cpus }}{% endif %}', {"system", "resources"}),
        ("{{ facts.custom.stack.torch }}", {"system"}),
        ("{{ facts }}", ALL_GROUPS),  # whole: every group
        ("{{ facts[name] }}", ALL_GROUPS),  # a computed key
        ("{{ facts.get('arch') }}", ALL_GROUPS),  # a name fleet does not know
        ("{{ hostvars[h]['facts']['arch'] }}", ALL_GROUPS),
        ("gather_facts: false, facts_override: {}", {"system"}),  # other words, not `facts`
    ],
)
def test_the_groups_a_template_names(text, groups):
    assert groups_named([text]) == groups


def test_a_fact_not_gathered_fails_where_it_is_used_never_reads_empty():
    facts = Facts(arch="aarch64", cpus=0)
    view = facts_view(facts, frozenset({"system"}))
    assert render("{{ facts.arch }}", {"facts": view}) == "aarch64"
    with pytest.raises(NotGathered, match="'cpus' was not gathered"):
        render("{{ facts.cpus }}", {"facts": view})
    with pytest.raises(TemplateError):  # not a fact at all: undefined, as before
        render("{{ facts.nothing }}", {"facts": view})
    partial = PartialFacts(facts, frozenset({"system"}))
    assert partial.arch == "aarch64"
    with pytest.raises(NotGathered, match="'gpus' was not gathered"):
        _ = partial.gpus


def _sent(stdout: str, host: str = HOST) -> list[str]:
    """The scripts of each request the run sent to the host (from its run log)."""
    start = next(json.loads(line) for line in stdout.splitlines() if '"run_start"' in line)
    log = (Path(start["log_dir"]) / f"{host}.log").read_text()
    return log.split(" command:\n")[1:]


def _gathered(script: str) -> set[str]:
    return {group for group, marker in SECTIONS.items() if marker in script}


def _results(stdout: str) -> list[dict]:
    return [e for e in map(json.loads, stdout.splitlines()) if e["event"] == "task_result"]


def test_each_play_gathers_only_the_groups_it_names(ssh_fleet, ssh_inventory, tmp_path):
    (tmp_path / "arch.j2").write_text("arch={{ facts.arch }} python={{ facts.python }}\n")
    plays = [
        {"hosts": HOST, "tasks": [{"copy": {"dest": "~/facts-a", "content": "{{ facts.arch }}\n"}}]},
        {"hosts": HOST, "tasks": [{"template": {"src": "arch.j2", "dest": "~/facts-b"}}]},  # names python
        {
            "hosts": HOST,
            "vars": {"n": "{{ facts.cpus }}"},
            "tasks": [{"copy": {"dest": "~/facts-c", "content": "{{ n }}"}}],
        },
        {"hosts": HOST, "gather_facts": False, "tasks": [{"copy": {"dest": "~/facts-d", "content": "x"}}]},
        {"hosts": HOST, "tasks": [{"assert": {"that": ["facts.gpu_count == 0", "facts.cpus > 0"]}}]},
    ]
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    done = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    scripts = [s for s in _sent(done.stdout) if "s end" in s]  # the requests that gathered facts
    # Play 1: system only; play 2 adds tools (its template file); play 3 resources (a play var);
    # play 4 gathers nothing; play 5 adds gpu (an assert's expressions), and cpus is not asked again.
    assert [_gathered(s) for s in scripts] == [{"system"}, {"system", "tools"}, {"system", "resources"},
                                               {"system", "gpu"}]  # fmt: skip
    home = ssh_fleet.host(HOST).home
    arch = (home / "facts-a").read_text().strip()
    assert arch and (home / "facts-b").read_text().startswith(f"arch={arch} python=3.")
    assert int((home / "facts-c").read_text()) > 0


def test_the_inventory_and_extra_vars_name_facts_too(ssh_fleet, ssh_inventory, tmp_path):
    book = tmp_path / "book.yaml"
    book.write_text(
        yaml.safe_dump([{"hosts": HOST, "tasks": [{"copy": {"dest": "~/facts-e", "content": "{{ where }}"}}]}])
    )
    done = run_fleet(
        "run", book, "-i", ssh_inventory, "--json", "-e", "where={{ facts.uv or 'no uv' }} {{ facts.disk_free_bytes }}"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert _gathered(_sent(done.stdout)[0]) == {"system", "tools", "resources"}


def test_an_action_reading_facts_in_python_gets_what_it_names(ssh_fleet, ssh_inventory, tmp_path):
    """An action written outside fleet that says nothing of the facts it reads gets every group;
    one that names its groups gets those, and reading another fails with the reason (never a 0)."""
    book = tmp_path / "book.py"
    book.write_text(
        textwrap.dedent(
            """
        from typing import ClassVar
        from fleet import Play, Task
        from fleet.model import Plan
        from fleet.task import Action, Args, action

        class CpuArgs(Args):
            pass

        @action
        class CountCpus(Action):
            name = "count_cpus"
            Args: ClassVar = CpuArgs
            read_only = True

            def plan(self, observed, ctx):
                return Plan(summary=f"{ctx.facts.cpus} cpus")

        @action
        class CountCpusNamed(CountCpus):
            name = "count_cpus_named"
            facts_used = frozenset({"resources"})

        @action
        class CountCpusWrong(CountCpus):
            name = "count_cpus_wrong"
            facts_used = frozenset({"tools"})

        PLAYS = [Play(hosts="HOST_NAME", tasks=[Task("TASK", {})])]
    """
        )
    )
    source = book.read_text().replace("HOST_NAME", HOST)
    seen = {}
    for task in ("count_cpus", "count_cpus_named", "count_cpus_wrong"):
        book.write_text(source.replace('"TASK"', repr(task)))
        done = run_fleet("run", book, "-i", ssh_inventory, "--json")
        ((result,), scripts) = _results(done.stdout), [s for s in _sent(done.stdout) if "s end" in s]
        seen[task] = (result["status"], result["message"], _gathered(scripts[0]))
    assert seen["count_cpus"][2] == set(SECTIONS) and seen["count_cpus_named"][2] == {"system", "resources"}
    for task in ("count_cpus", "count_cpus_named"):
        status, message, _ = seen[task]
        assert status == "ok" and message.endswith(" cpus") and not message.startswith("0 "), seen[task]
    status, message, groups = seen["count_cpus_wrong"]
    assert status == "failed" and "fact 'cpus' was not gathered" in message and groups == {"system", "tools"}


def test_the_setup_playbook_gathers_every_group_its_checks_need():
    from fleet.factuse import play_groups
    from fleet.playbook import load_playbook

    book = load_playbook(REPO / "playbooks" / "setup.yaml")
    assert set().union(*(play_groups(p) for p in book.plays)) >= {"system", "gpu"}


def test_what_a_play_names_is_asked_once_and_forgotten_with_the_play():
    import gc

    from fleet import factuse
    from fleet.playbook import Play, Task

    play = Play(tasks=[Task(action="assert", args={"that": ["facts.cpus > 0"]})])
    assert factuse.play_groups(play) == {"system", "resources"}
    assert factuse.play_groups(play) is factuse._PLAYS[id(play)][1]  # the second host asks the cache
    key = id(play)
    del play
    gc.collect()
    assert key not in factuse._PLAYS  # a long-lived program keeps no play it ran


def test_every_fact_belongs_to_a_group_and_every_group_has_its_probe():
    from dataclasses import fields

    from fleet.facts import GROUP_PROBES, probe_script
    from fleet.factuse import FIELD_GROUPS

    assert {f.name for f in fields(Facts)} <= set(FIELD_GROUPS)
    assert set(GROUP_PROBES) == ALL_GROUPS
    for group, marker in SECTIONS.items():  # each group's probe runs its own sections and no other's
        script = probe_script(frozenset({group}))
        assert marker in script and all(m not in script for g, m in SECTIONS.items() if g not in (group, "system"))
