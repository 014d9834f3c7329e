"""Built-in task types. Importing this package registers them with fleet.task.ACTIONS."""

from . import apt, checks, command, download, files, pip, profile, python, stack, uv  # noqa: F401
