"""Numbers and tables as text: the formats the claims table and the report share."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def clean_values(values: Iterable[float]) -> np.ndarray:
    """Seed values as floats; NaN (no measurement) dropped, +inf (diverged) kept."""
    x = np.asarray(list(values), dtype=float)
    return x[~np.isnan(x)]


def fmt(x: float, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, "inf" for a blow-up, "-" for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def fmt_value(v: Any) -> str:
    """A config value for a ``key=value`` label: whole floats without ".0", floats to 4 digits."""
    if isinstance(v, (float, np.floating)):
        if float(v).is_integer():
            return str(int(v))
        return fmt(float(v))
    return str(v)


def fmt_spread(values: Iterable[float], digits: int = 4) -> str:
    """``mean [min-max]`` over seeds; just the value when all seeds agree; "-" when none."""
    x = clean_values(values)
    if x.size == 0:
        return "-"
    lo, hi = fmt(float(np.min(x)), digits), fmt(float(np.max(x)), digits)
    if lo == hi:  # all seeds agree to the digits shown
        return lo
    return f"{fmt(float(np.mean(x)), digits)} [{lo}-{hi}]"


def fmt_pct_spread(values: Iterable[float]) -> str:
    """Shares (gains) as ``mean% [min% to max%]``, one decimal; "-inf%" for a blow-up."""
    x = clean_values(values)
    if x.size == 0:
        return "-"

    def pct(v: float) -> str:
        return f"{v:+.1%}" if math.isfinite(v) else ("-inf" if v < 0 else "inf")

    lo, hi = pct(float(np.min(x))), pct(float(np.max(x)))
    if lo == hi:
        return lo
    return f"{pct(float(np.mean(x)))} [{lo} to {hi}]"


def md_cell(value: Any) -> str:
    """Text for a markdown table cell: pipes escaped, newlines flattened."""
    text = value if isinstance(value, str) else fmt(value) if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame) -> str:
    """A pandas table as a GitHub-flavoured markdown table."""
    header = "| " + " | ".join(md_cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def command_text(command: Any) -> str:
    """The command from study.yaml as one line (it may be stored as a list of arguments)."""
    if isinstance(command, (list, tuple)):
        return shlex.join(str(c) for c in command)
    return " ".join(str(command).split())


def image(rel: str, alt: str) -> str:
    """A markdown image link to a plot, relative to report.md."""
    return f"![{alt}]({rel})"
