"""Shell completion scripts, built from the argument parser itself, so they never lag behind it."""

from __future__ import annotations

import argparse
import shlex


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """Top-level commands, and each command's options (and its own sub-commands)."""
    commands: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = [o for a in sub._actions for o in a.option_strings]
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        words += list(inner.choices)
                commands[name] = sorted(set(words))
    top = [o for a in parser._actions for o in a.option_strings]
    return [*commands, *top], commands


def script(parser: argparse.ArgumentParser, shell: str = "bash") -> str:
    top, commands = _words(parser)
    cases = "\n".join(
        f"        {shlex.quote(name)}) opts={shlex.quote(' '.join(words))} ;;" for name, words in commands.items()
    )
    body = f"""_fleet_complete() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="${{COMP_WORDS[1]}}" opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        opts={shlex.quote(" ".join(top))}
    else
        case "$cmd" in
{cases}
        *) opts="" ;;
        esac
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    [ ${{#COMPREPLY[@]}} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
    return 0
}}
complete -F _fleet_complete fleet
"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body
