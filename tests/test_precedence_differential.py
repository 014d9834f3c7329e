"""Variable precedence against ansible-core: one inventory and one playbook, run by
ansible-playbook and by fleet on localhost (local connection), each writing the value every
variable ends up with to a file; the two folders must be identical, byte for byte.

Each variable is defined at a different set of levels (inventory group `all`, a group, the host,
group_vars/ and host_vars/ beside the inventory, play `vars:`, `vars_files:`, a registered result,
`-e`), so each file says which level won; a registered loop gives the same `results`. Templates
in values are rendered lazily in both tools, and a value built from an expression keeps its type
(`{{ n * 2 }}`)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import run_fleet

pytest.importorskip("ansible")

INVENTORY = """\
[all:vars]
ansible_connection=local
v_all=inventory-all
v_group=inventory-all
v_host=inventory-all
v_play=inventory-all
v_files=inventory-all
v_extra=inventory-all
v_gv=inventory-all

[nodes]
localhost v_host=inventory-host v_play=inventory-host v_files=inventory-host v_hv=inventory-host

[nodes:vars]
v_group=inventory-group
v_host=inventory-group
v_play=inventory-group
v_gv=inventory-group
"""

GROUP_VARS = {"v_gv": "group_vars-nodes", "v_gv_only": "group_vars-nodes", "v_hv": "group_vars-nodes"}
HOST_VARS = {"v_hv": "host_vars-localhost", "base": 20}
VARS_FILE = {"v_files": "vars_files", "v_extra": "vars_files", "v_reg": "vars_files"}

NAMES = [
    "v_all", "v_group", "v_host", "v_play", "v_files", "v_extra", "v_gv", "v_gv_only", "v_hv", "v_reg", "reg_lines",
    "loop_reg", "lazy", "typed",
]  # fmt: skip


def playbook() -> list[dict]:
    register = {"name": "register one", "command": {"cmd": "echo registered"}, "register": "v_reg"}
    looped = {"name": "register a loop", "command": "echo {{ item }}", "loop": ["a", "b"], "register": "looped"}
    tasks = [{**register, "changed_when": False}, looped]
    # A registered command's stdout as ansible-core's command module gives it: no trailing newline.
    special = {"v_reg": "{{ v_reg.stdout }}", "reg_lines": "{{ v_reg.stdout_lines }}"}
    special["loop_reg"] = (
        "{{ looped.results | map(attribute='stdout') | list }} {{ looped.results | map(attribute='item') | list }} "
        "{{ looped.changed }} {{ looped.results | map(attribute='rc') | list }}"
    )
    # `-e n=3 -e flag=false`: text in ansible-core, typed (YAML) in fleet: the deliberate difference.
    special["e_types"] = "{{ e_number is number }} {{ e_flag is sameas false }}"
    for name in [*NAMES, "e_types"]:
        value = special.get(name, "{{ " + name + " }}")
        tasks.append({"name": f"write {name}", "copy": {"dest": "{{ out }}/" + name, "content": f"{name}={value}\n"}})
    return [
        {
            "name": "precedence",
            "hosts": "nodes",
            "gather_facts": False,
            "vars": {
                "v_play": "play-vars",
                "v_files": "play-vars",
                "v_reg": "play-vars",
                "lazy": "{{ v_host }}+{{ v_play }}",  # rendered where used, against the winning values
                "typed": "{{ base * 2 }}",  # a number from host_vars, doubled: 40
            },
            "vars_files": ["vars.yaml"],
            "tasks": tasks,
        }
    ]


def test_every_variable_ends_up_with_the_value_ansible_core_gives_it(tmp_path):
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.ini").write_text(INVENTORY)
    for folder, name, values in (("group_vars", "nodes", GROUP_VARS), ("host_vars", "localhost", HOST_VARS)):
        (tmp_path / "inventory" / folder).mkdir()
        (tmp_path / "inventory" / folder / f"{name}.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "vars.yaml").write_text(yaml.safe_dump(VARS_FILE))
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump(playbook(), sort_keys=False))
    by_ansible, by_fleet = tmp_path / "ansible", tmp_path / "fleet"
    by_ansible.mkdir()
    by_fleet.mkdir()
    extra = ["-e", "v_extra=extra-vars", "-e", "e_number=3", "-e", "e_flag=false"]
    done = subprocess.run(
        [shutil.which("ansible-playbook") or "ansible-playbook", "-i", str(tmp_path / "inventory" / "hosts.ini"),
         str(book), *extra, "-e", f"out={by_ansible}", "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    done = run_fleet("run", book, "-i", tmp_path / "inventory" / "hosts.ini", *extra, "-e", f"out={by_fleet}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    got = {name: (by_fleet / name).read_text() for name in NAMES}
    assert got == {name: (by_ansible / name).read_text() for name in NAMES}
    # What each level won, spelled out (the comparison above is the proof; this is the reading).
    won = {
        "v_all": "inventory-all", "v_group": "inventory-group", "v_host": "inventory-host", "v_play": "play-vars",
        "v_files": "vars_files", "v_extra": "extra-vars", "v_gv": "group_vars-nodes", "v_gv_only": "group_vars-nodes",
        "v_hv": "host_vars-localhost", "v_reg": "registered", "reg_lines": "['registered']",
        "loop_reg": "['a', 'b'] ['a', 'b'] True [0, 0]",
        "lazy": "inventory-host+play-vars", "typed": "40",
    }  # fmt: skip
    assert got == {name: f"{name}={value}\n" for name, value in won.items()}
    # The one deliberate difference (README): `-e key=value` is read as YAML by fleet, as text by ansible-core.
    assert (by_fleet / "e_types").read_text() == "e_types=True True\n"
    assert (by_ansible / "e_types").read_text() == "e_types=False False\n"
