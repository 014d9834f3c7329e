"""Built-in task types. Importing this package registers them with fleet.task.ACTIONS."""

from . import apt, checks, command, files  # noqa: F401
