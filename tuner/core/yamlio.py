"""The one YAML reader of the project: safe, bounded, strict about keys, YAML 1.1 numbers fixed.

Run configs and search-space files both come through `read_mapping`. On top of PyYAML's
`safe_load` it

* refuses a document whose aliases would expand past `MAX_NODES` nodes or that uses more than
  `MAX_ALIASES` aliases (a 1.5 KB "billion laughs" file otherwise becomes gigabytes as soon as
  anything walks or prints it); the check runs on the composed node graph, before any Python
  object is built, so it costs microseconds;
* refuses a key written twice in one mapping, at any depth, with both line numbers (PyYAML
  silently keeps the last one, so a second `train:` section would drop the first's keys);
* offers `number` (the YAML 1.1 exponent fix: PyYAML reads `1e-4`, without a dot or a signed
  exponent, as a string) and `short` (a repr cut to one short line without ever building the
  full repr of a huge value), for every message that echoes a value.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_ALIASES = 100
"""Aliases (`*name`) one document may use; hand-written configs use a handful."""
MAX_NODES = 100_000
"""Nodes the document may have once every alias is expanded."""


class YamlError(ValueError):
    """The file is not a document we accept; the message is one line (no file name)."""


# ---------------------------------------------------------------- bounded text of values

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 6, 6
_REPR.maxset = _REPR.maxfrozenset = 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def short(value: Any, limit: int = 80) -> str:
    """repr(value) on one line of at most `limit` characters.

    Built with `reprlib`, which stops at a few items per level and a few levels, so the
    cost is bounded whatever the size of `value` (a full repr of an alias bomb is gigabytes)."""
    text = _REPR.repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_NUMBER = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?")


def number(value: Any) -> Any:
    """'1e-4' or '2.0e6' -> float: PyYAML (YAML 1.1) reads exponents without a dot or a sign
    as strings, a trap in every config file. Anything else (also 'inf', 'nan') is returned
    unchanged, for the caller's type check to reject or accept."""
    if isinstance(value, str) and len(value) < 100 and _NUMBER.fullmatch(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


# ---------------------------------------------------------------- the loader


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts aliases and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                event = self.peek_event()
                raise YamlError(
                    f"more than {MAX_ALIASES} aliases (line "
                    f"{event.start_mark.line + 1}); allowed: at most {MAX_ALIASES}"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
                if first is not None:
                    raise YamlError(
                        f"key {short(key)} appears twice (lines {first} and {line}); allowed: each key once"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, stopping at MAX_NODES + 1.

    Aliases make the composed graph share nodes; the size of each shared node is computed
    once (memo), so a bomb of 10 levels x 9 copies costs 10 steps, not 9**10."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise YamlError(
                f"an alias refers to itself (line {node.start_mark.line + 1}); "
                "allowed: aliases to finished nodes"
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total = min(total + size(child), MAX_NODES + 1)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total = min(total + size(k) + size(v), MAX_NODES + 1)
        active.discard(key)
        memo[key] = total
        return total

    return size(root)


def load_text(text: str) -> Any:
    """Parse one YAML document with the limits above; YamlError (one line) on refusal."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise YamlError(
                f"the document expands to more than {MAX_NODES:,} nodes through "
                "its aliases; allowed: a plain config (aliases are for small reuse)"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise YamlError("nested too deeply; allowed: a plain config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise YamlError(f"not valid YAML{where}" + (f" ({str(problem)[:60]})" if problem else "")) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_mapping(path: str | Path) -> Any:
    """The parsed document of a file (None when empty); YamlError says what is wrong.

    The caller decides whether None or a non-mapping is acceptable."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise YamlError("file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"cannot read ({exc.__class__.__name__})") from None
    return load_text(text)
