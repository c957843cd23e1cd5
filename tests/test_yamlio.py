"""Tests of tuner.core.yamlio, the one YAML reader: limits, duplicate keys, bounded messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.core import config as config_mod
from tuner.core import yamlio
from tuner.core.config import ConfigError


def bomb(levels: int = 10, copies: int = 9) -> str:
    """'Billion laughs': each level a list of `copies` aliases of the level below."""
    lines = ["l0: &l0 [lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * copies) + "]")
    return "\n".join(lines) + f"\nmodel: *l{levels - 1}\n"


def test_load_text_refuses_alias_bomb() -> None:
    # a small file whose aliases expand to billions of nodes is refused, with one line
    with pytest.raises(yamlio.YamlError) as info:
        yamlio.load_text(bomb())
    assert "aliases" in str(info.value) and "\n" not in str(info.value)


def test_load_text_refuses_too_many_aliases() -> None:
    # more aliases than a hand-written config needs is refused, with the line reached
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (yamlio.MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(yamlio.YamlError, match=r"more than 100 aliases \(line 2\)"):
        yamlio.load_text(text)


def test_load_text_accepts_small_alias_reuse() -> None:
    # a few aliases (the normal use: one setting reused) load as usual
    doc = yamlio.load_text("base: &b {lr: 0.1}\ntrain: *b\nother: {<<: *b, lr: 0.2}\n")
    assert doc["train"] == {"lr": 0.1} and doc["other"] == {"lr": 0.2}


def test_load_text_refuses_recursive_alias() -> None:
    # an alias inside its own anchor would make an infinite document
    with pytest.raises(yamlio.YamlError, match="refers to itself"):
        yamlio.load_text("a: &a [1, *a]\n")


@pytest.mark.parametrize(
    "text,key,lines",
    [
        ("train: {lr: 0.1}\nmodel: {}\ntrain: {max_epochs: 2}\n", "train", (1, 3)),
        ("train:\n  lr: 0.1\n  clip:\n    mode: norm\n    mode: value\n", "mode", (4, 5)),
        ("space:\n  - {a: 1, a: 2}\n", "a", (2, 2)),
    ],
)
def test_load_text_refuses_duplicate_keys_at_any_depth(text: str, key: str, lines: tuple[int, int]) -> None:
    # a key written twice in one mapping is refused with both lines (PyYAML keeps the last)
    with pytest.raises(yamlio.YamlError, match=rf"'{key}' appears twice \(lines {lines[0]} and {lines[1]}\)"):
        yamlio.load_text(text)


def test_config_load_refuses_duplicated_train_section(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train: {lr: 0.1}\ntrain: {max_epochs: 2}\n")
    # the run-config loader uses the same reader: one line naming the file and the lines
    with pytest.raises(ConfigError, match=r"run.yaml: key 'train' appears twice \(lines 1 and 2\)"):
        config_mod.load(path)


def test_short_is_bounded_for_huge_values() -> None:
    huge = [list(range(10**6))] * 10**3  # a full repr would be gigabytes
    # the text is one short line, built without the full repr
    text = yamlio.short(huge)
    assert len(text) <= 80 and "\n" not in yamlio.short("a\nb")


def test_config_error_message_of_a_huge_value_is_short() -> None:
    # a bad value of any size is echoed in a bounded way
    with pytest.raises(ConfigError) as info:
        config_mod.from_dict({"model": [list(range(10**5))] * 100})
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    "text,value",
    [("1e-4", 1e-4), ("2.0e6", 2e6), ("+3E2", 300.0), ("1_000", 1000.0), ("inf", "inf"), ("x1e3", "x1e3")],
)
def test_number_reads_yaml11_exponents(text: str, value: object) -> None:
    # PyYAML leaves '1e-4' a string; number() reads it; other strings pass through unchanged
    assert yamlio.number(text) == value


def test_config_accepts_yaml11_exponent_strings(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train: {lr: 1e-4, max_epochs: 1e2}\n")
    # the run config reads them through the same fix, floats and integral ints alike
    config = config_mod.load(path)
    assert config.train.lr == 1e-4 and config.train.max_epochs == 100
