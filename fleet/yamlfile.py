"""YAML loading that remembers where each mapping and list came from, so errors can say
`file:line`, and that turns YAML's own errors into one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .model import FleetError


class LineDict(dict):
    """A mapping that knows the line it started on."""

    line: int | None = None


class LineList(list):
    line: int | None = None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: ~10x faster
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise FleetError(f"duplicate key {key!r}@{key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
    out.line = node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise FleetError(f"{source}{line}: malformed YAML: {problem}; fix the indentation or quoting there") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{source}: malformed YAML: {exc}") from None
    except RecursionError:  # PyYAML composes and builds nodes recursively
        raise FleetError(f"{source}: YAML nested too deeply to be a playbook, inventory or vars file") from None
    except FleetError as exc:
        message, _, line = str(exc).rpartition("@")
        raise FleetError(f"{source}:{line}: {message}; each key may appear once") from None


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FleetError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise FleetError(f"{path}: not a UTF-8 text file") from None
    return parse_yaml(text, str(path))


def line_of(node: Any) -> int | None:
    return getattr(node, "line", None)
