"""YAML with positions: the data as plain Python values, plus the line and column of every value and
every mapping key, addressed by its path (a tuple of keys and list indices).

PyYAML's composer keeps a start mark on every node; constructing the data from the same node tree keeps
the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Pos:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Located:
    data: Any
    values: dict[Path, Pos] = field(default_factory=dict)  # where each value starts
    keys: dict[Path, Pos] = field(default_factory=dict)  # where each mapping key starts

    def where(self, path: Path, key: bool = False) -> Pos:
        """The position of path (its key when key is true), else of its nearest ancestor."""
        table = self.keys if key else self.values
        for n in range(len(path), -1, -1):
            pos = table.get(path[:n]) or self.values.get(path[:n])
            if pos is not None:
                return pos
        return Pos(1, 1)


class YamlSyntaxError(Exception):
    def __init__(self, message: str, pos: Pos) -> None:
        super().__init__(message)
        self.pos = pos


def _pos(node: yaml.Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


# A workload is a few dozen values; aliases can make a short text expand to billions ("billion laughs"),
# which the walk below, the validator and the compiler would each go through: refuse past this many.
MAX_VALUES = 100_000
# The schema nests five levels deep; the parser allows 1,000, past Python's recursion limit for this walk.
MAX_DEPTH = 64


def _walk(node: yaml.Node, path: Path, out: Located) -> None:
    out.values[path] = _pos(node)
    if len(out.values) > MAX_VALUES:
        raise YamlSyntaxError(
            f"more than {MAX_VALUES} values (aliases counted as often as they are used): a workload holds"
            " a few dozen",
            _pos(node),
        )
    if len(path) > MAX_DEPTH:
        raise YamlSyntaxError(f"nested more than {MAX_DEPTH} levels deep", _pos(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            first = out.keys.get((*path, key))
            if first is not None:
                message = f"key {key!r} given twice (first at line {first.line})"
                raise YamlSyntaxError(message, _pos(key_node))
            out.keys[(*path, key)] = _pos(key_node)
            _walk(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), out)


# libyaml's parser where PyYAML was built with it (marks and errors as the pure-Python one gives them):
# 10-20x faster, and the workload_yaml fuzz target then spends its time in the validator, not the parser.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> Located:
    """Parse YAML text; YamlSyntaxError carries the position of a syntax error."""
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
        if node is None:
            return Located(None)
        out = Located(None)
        _walk(node, (), out)  # before the data is built: it refuses a bomb, deep nesting, duplicate keys
        loader = yaml.SafeLoader("")
        out.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark else Pos(1, 1)
        raise YamlSyntaxError(f"{exc.problem or exc.context or 'bad YAML'}", pos) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML refuses: at its line and column
        before = text[: exc.position]
        pos = Pos(before.count("\n") + 1, exc.position - before.rfind("\n"))
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise YamlSyntaxError(f"unacceptable character {char}: {exc.reason}", pos) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), Pos(1, 1)) from exc
    return out
