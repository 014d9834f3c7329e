"""`fleet train`: launch (the default), `status`, `logs` and `stop` of a GRPO run across hosts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..model import FleetError

# Options every train command takes; given before or after the action word, they mean the same.
_SHARED = (
    "inventory", "pattern", "forks", "json", "verbose", "extra_vars", "accept_new_host_keys", "config", "run",
    "backend", "partition", "nodes",
)  # fmt: skip


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

    logs = actions.add_parser("logs", help="the run's log lines, prefixed by host")
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
    parser.add_argument(
        "--backend", choices=("ssh", "slurm"), default=None,
        help="ssh: detached jobs on the selected hosts (default); slurm: sbatch from the login host, the "
        "selected hosts as the node list (default: the config's job.backend)",
    )  # fmt: skip
    parser.add_argument("--partition", default=None, help="slurm: any --nodes nodes of this partition")
    parser.add_argument("--nodes", type=int, default=None, help="slurm: how many nodes (default: the pattern's)")
    if nested:
        # Unset here must not erase what was given before the action word (`fleet train -H x stop`):
        # SUPPRESS as the action's own default (not set_defaults, which would store the marker).
        for action in parser._actions:
            if action.dest in _SHARED:
                action.default = argparse.SUPPRESS


def _setup(args: argparse.Namespace) -> tuple[Any, list[str], Any, Any]:
    from ..cli import host_pattern, load_inventory_arg, run_options
    from .config import load_config

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    config = load_config(args.config, run_name=args.run)
    if args.backend:
        config = replace(config, job=config.job.model_copy(update={"backend": args.backend}))
    slurm_partition = config.job.backend == "slurm" and (args.partition or config.job.slurm.partition)
    hosts = [] if slurm_partition and not args.pattern else inventory.require(host_pattern(args))
    return inventory, hosts, config, run_options(args)


def _slurm(args: argparse.Namespace, inventory: Any, hosts: list[str], config: Any) -> tuple[Any, Any]:
    from .slurm_control import resolve_target

    if args.nodes is not None and args.nodes < 1:
        raise FleetError(f"--nodes {args.nodes}: give 1 or more")
    return resolve_target(inventory, hosts, config, args.partition, args.nodes)


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
    if config.job.backend == "slurm":
        from . import slurm_control

        login_inventory, target = _slurm(args, inventory, hosts, config)
        return slurm_control.launch(login_inventory, target, config, options, reporter, mode=mode).exit_code
    return launch(inventory, hosts, config, options, reporter, mode=mode, ignore_health=args.ignore_health).exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from .control import collect_status
    from .view import show_status

    inventory, hosts, config, options = _setup(args)
    if config.job.backend == "slurm":
        from . import slurm_control

        login_inventory, target = _slurm(args, inventory, hosts, config)
        items = slurm_control.collect_status(login_inventory, target, config, options)
        return show_status(items, config.job.run_name, as_json=args.json)
    return show_status(collect_status(inventory, hosts, config, options), config.job.run_name, as_json=args.json)


def cmd_logs(args: argparse.Namespace) -> int:
    from .control import show_logs

    inventory, hosts, config, options = _setup(args)
    if config.job.backend == "slurm":
        from . import slurm_control

        login_inventory, target = _slurm(args, inventory, hosts, config)
        lines = max(0, args.lines)
        return slurm_control.show_logs(
            login_inventory, target, config, options, lines=lines, follow=args.follow, as_json=args.json
        )
    return show_logs(inventory, hosts, config, options, lines=max(0, args.lines), follow=args.follow, as_json=args.json)


def cmd_stop(args: argparse.Namespace) -> int:
    from ..report import choose_reporter
    from .control import stop

    inventory, hosts, config, options = _setup(args)
    reporter = choose_reporter(json_lines=args.json)
    if config.job.backend == "slurm":
        from . import slurm_control

        login_inventory, target = _slurm(args, inventory, hosts, config)
        return slurm_control.stop(login_inventory, target, config, options, reporter).exit_code
    return stop(inventory, hosts, config, options, reporter).exit_code
