"""fleet: fleet automation for GPU training clusters.

Playbooks of idempotent tasks run over SSH on an inventory of nodes, with GPU facts per host and
parallel rollout of training jobs. Python playbooks use the same objects as YAML ones:

    from fleet import Play, Task
    PLAYS = [Play(hosts="gh200", tasks=[Task("apt", {"packages": ["git"]}, become=True)])]
"""

from importlib import import_module
from typing import Any

from .model import FleetError

# Loaded on first use, so commands that need no playbook engine (facts, train status) start fast.
_LAZY = {"Play": "playbook", "Playbook": "playbook", "Action": "task", "Args": "task", "Task": "task", "action": "task"}

__all__ = ["Action", "Args", "FleetError", "Play", "Playbook", "Task", "action"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fleet' has no attribute {name!r}")
