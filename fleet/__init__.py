"""fleet: fleet automation for GPU training clusters.

Playbooks of idempotent tasks run over SSH on an inventory of nodes, with GPU facts per host and
parallel rollout of training jobs. Python playbooks use the same objects as YAML ones:

    from fleet import Play, Task
    PLAYS = [Play(hosts="gh200", tasks=[Task("apt", {"packages": ["git"]}, become=True)])]
"""

from .model import FleetError
from .playbook import Play, Playbook
from .task import Action, Args, Task, action

__all__ = ["Action", "Args", "FleetError", "Play", "Playbook", "Task", "action"]
__version__ = "0.1.0"
