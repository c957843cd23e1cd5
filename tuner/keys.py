"""`python -m tuner.keys [PREFIX]`: every config key with its type, default and one-line doc.

Generated from the frozen dataclasses of `tuner.core.config` and their field docstrings (the
string literal under each field), so the listing can never drift from what the loader accepts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import typing
from typing import Any
from collections.abc import Iterator

from tuner.core import config as config_mod


def _field_docs(cls: type) -> dict[str, str]:
    """The first line of the docstring written under each field of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def config_keys(cls: type = config_mod.Config, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every leaf key of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from config_keys(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", _type_name(tp), getattr(instance, f.name), docs.get(f.name, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuner.keys",
        description="List every config key (data.*, model.*, train.*) with its type, default and doc.",
        epilog="examples:\n  python -m tuner.keys\n  python -m tuner.keys train.clip\n  lstm-tuner keys data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prefix", nargs="?", default="", help="show only keys starting with this")
    args = parser.parse_args(argv)
    rows = [r for r in config_keys() if r[0].startswith(args.prefix)]
    if not rows:
        print(
            f"error: no config key starts with {args.prefix!r}; sections: data, model, train", file=sys.stderr
        )
        return 2
    for key, tp, default, doc in rows:
        print(f"{key} = {default!r}  ({tp})\n    {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
