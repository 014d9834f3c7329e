"""demo.yaml as a Python playbook: the same play and tasks, through the same Play/Task objects.

fleet run playbooks/demo.py -i inventories/local
"""

from fleet import Play, Task

PLAYS = [
    Play(
        name="demo",
        hosts="all",
        vars={"demo_dir": "~/fleet-demo", "greeting": "hello from fleet"},
        tasks=[
            Task("directory", {"path": "{{ demo_dir }}", "mode": "0755"}, name="scratch folder"),
            Task(
                "copy",
                {"dest": "{{ demo_dir }}/greeting.txt", "content": "{{ greeting }} on {{ inventory_hostname }}\n"},
                name="greeting file",
            ),
            Task(
                "template",
                {"src": "files/summary.txt.j2", "dest": "{{ demo_dir }}/summary.txt", "mode": "0644"},
                name="host summary from facts",
            ),
            Task(
                "line",
                {"path": "{{ demo_dir }}/env.sh", "line": "export FLEET_DEMO=1", "regexp": "^export FLEET_DEMO="},
                name="a line in a profile-like file",
            ),
            Task(
                "command",
                {"cmd": "touch {{ demo_dir }}/stamp", "creates": "{{ demo_dir }}/stamp"},
                name="one-time command",
            ),
            Task(
                "command",
                {"cmd": "cat {{ demo_dir }}/greeting.txt"},
                name="check the greeting",
                register="greeting_out",
                changed_when=False,
            ),
            Task(
                "assert",
                {
                    "that": ["'hello' in greeting_out.stdout", "facts.cpus >= 1"],
                    "msg": "greeting file does not hold the greeting",
                },
                name="greeting is what we wrote",
                when="not check_mode",  # --check did not run the command above
            ),
        ],
    )
]
