"""Built-in task types. A module registers its types with fleet.task.ACTIONS when imported; fleet
imports only the modules a playbook uses (`fleet run` of a file playbook never loads `packaging`
for pip unless a task needs it)."""

from __future__ import annotations

import importlib

# task type -> the module here that defines it
MODULE = {
    "apt": "apt",
    "assert": "checks",
    "command": "command",
    "shell": "command",
    "download": "download",
    "directory": "files",
    "copy": "files",
    "template": "files",
    "line": "files",
    "pip": "pip",
    "profile": "profile",
    "python": "python",
    "stack": "stack",
    "uv": "uv",
    "venv": "uv",
}
MODULES = ("apt", "checks", "command", "download", "files", "pip", "profile", "python", "stack", "uv")


def load(name: str) -> None:
    """Import the module of task type `name`; every module when the name is not a built-in one
    (so that an unknown name's error can list all the known ones)."""
    for module in [MODULE[name]] if name in MODULE else MODULES:
        importlib.import_module(f"{__name__}.{module}")
