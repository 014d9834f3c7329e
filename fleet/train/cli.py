"""`fleet train`: launch (the default), `status`, `logs` and `stop` of a GRPO run across hosts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..model import FleetError

# Options every train command takes; given before or after the action word, they mean the same.
_SHARED = ("inventory", "pattern", "forks", "json", "extra_vars", "accept_new_host_keys", "config", "run")


def add_subcommand(subparsers: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    train = subparsers.add_parser(
        "train",
        help="launch, watch and stop GRPO training runs (train_grpo.py) across hosts",
        description="Without an action, launch the run on the selected hosts (nothing happens on a host "
        "where it already runs). Actions: status, logs, stop.",
    )
    _options(train, common)
    train.add_argument(
        "--ignore-health", action="store_true", help="launch even where fleet health finds a GPU unfit to train on"
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue the run from its newest checkpoint on every node"
    )
    again.add_argument(
        "--force", action="store_true", help="replace an existing run of this name (its log and checkpoints go)"
    )
    train.add_argument(
        "--wait", type=int, default=None, metavar="SECONDS",
        help="watch the job this long after the launch: a job that dies in it is reported failed "
        "(default: the config's job.launch_wait, 60)",
    )  # fmt: skip
    train.set_defaults(handler=cmd_launch)
    actions = train.add_subparsers(dest="train_action", metavar="{status,logs,stop}")

    status = actions.add_parser("status", help="state, step, loss, reward, GPU memory and runtime per host")
    _options(status, common, nested=True)
    status.set_defaults(handler=cmd_status)

    logs = actions.add_parser("logs", help="the run's log lines, prefixed by host", conflict_handler="resolve")
    _options(logs, common, nested=True)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the jobs end")
    logs.add_argument("-n", "--lines", type=int, default=20, help="lines per host to start with (default 20)")
    logs.set_defaults(handler=cmd_logs)

    stop = actions.add_parser("stop", help="stop the run's whole process tree and confirm it is gone")
    _options(stop, common, nested=True)
    stop.set_defaults(handler=cmd_stop)


def _options(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None], *, nested: bool = False
) -> None:
    common(parser)
    parser.add_argument(
        "-c", "--config", default=None, help="training config: `job:` for fleet, `train:` for the script "
        "(default: playbooks/files/train_config.yaml)"
    )  # fmt: skip
    parser.add_argument("--run", default=None, help="run name (default: the config's job.run_name)")
    if nested:
        # Unset here must not erase what was given before the action word (`fleet train -H x stop`):
        # SUPPRESS as the action's own default (not set_defaults, which would store the marker).
        for action in parser._actions:
            if action.dest in _SHARED:
                action.default = argparse.SUPPRESS


def _setup(args: argparse.Namespace) -> tuple[Any, list[str], Any, Any]:
    from ..cli import load_inventory_arg, run_options
    from .config import load_config

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    hosts = inventory.require(args.pattern)
    config = load_config(args.config, run_name=args.run)
    return inventory, hosts, config, run_options(args)


def cmd_launch(args: argparse.Namespace) -> int:
    from ..report import choose_reporter
    from .control import launch

    inventory, hosts, config, options = _setup(args)
    reporter = choose_reporter(json_lines=args.json)
    if args.wait is not None:
        if args.wait < 0:
            raise FleetError(f"--wait {args.wait}: give seconds, 0 or more")
        config = replace(config, job=config.job.model_copy(update={"launch_wait": args.wait}))
    mode = "resume" if args.resume else "force" if args.force else "new"
    return launch(inventory, hosts, config, options, reporter, mode=mode, ignore_health=args.ignore_health).exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from .control import collect_status, show_status

    inventory, hosts, config, options = _setup(args)
    return show_status(collect_status(inventory, hosts, config, options), config.job.run_name, as_json=args.json)


def cmd_logs(args: argparse.Namespace) -> int:
    from .control import show_logs

    inventory, hosts, config, options = _setup(args)
    return show_logs(inventory, hosts, config, options, lines=max(0, args.lines), follow=args.follow)


def cmd_stop(args: argparse.Namespace) -> int:
    from ..report import choose_reporter
    from .control import stop

    inventory, hosts, config, options = _setup(args)
    return stop(inventory, hosts, config, options, choose_reporter(json_lines=args.json)).exit_code
