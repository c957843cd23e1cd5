"""The text-only sections of the report; each section function returns its markdown lines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tuner.report.claims import (
    BASELINE_CASE,
    DOES_NOT_HOLD,
    HOLDS,
    UNCLEAR,
    VERDICT_RULE,
    AblationSetup,
    case_summary,
    trial_metrics,
    verdict_lower,
)
from tuner.report.load import StudyFiles, mapping
from tuner.report.measures import (
    best_rows,
    config_columns,
    diverged_trials,
    finished,
    setting_key,
)
from tuner.report.plots import TOP_N
from tuner.report.text import code, command_text, fmt, fmt_spread, md_table

#: Section headers, in order (ablation sections only appear when trials have a ``case``).
H_SUMMARY = "## Summary"
H_STUDY = "## Study"
H_CURVES = "## Training curves"
H_ABLATION = "## Ablation: the article's cases"
H_CLAIMS = "## Claims of the article"
H_SEARCH = "## Search diagnostics"
H_AXIS = "### Objective against each hyperparameter"
H_EDGES = "### Edge of range"
H_DIVERGED = "### Diverged trials"
H_BEST = "### Best trials"
H_GRAD = "### Gradient norms and clipping"
H_IMPORTANCE = "### Parameter importance"
H_ANYTIME = "### Anytime: best objective against compute"
@dataclass
class Counts:
    """How many trials ended how."""

    total: int
    completed: int
    early_stopped: int
    diverged: int
    errors: int
    unfinished: int

    @property
    def finished(self) -> int:
        """Trials with final numbers (completed + early-stopped + diverged)."""
        return self.completed + self.early_stopped + self.diverged

    def diverged_share(self) -> str:
        """``n of m finished trials (p%)``."""
        m = self.finished
        share = f" ({self.diverged / m:.0%})" if m else ""
        return f"{self.diverged} of {m} finished trials{share}"


def count_trials(study: StudyFiles) -> Counts:
    """Count trials by status (diverged also when the objective is +inf)."""
    t = study.trials
    status = (
        t["status"].astype(str).str.strip().str.lower()
        if "status" in t.columns
        else pd.Series("completed", index=t.index)
    )
    div = diverged_trials(t, study.objective)
    return Counts(
        total=len(t),
        completed=int(((status == "completed") & ~div).sum()),
        early_stopped=int(((status == "early_stopped") & ~div).sum()),
        diverged=int(div.sum()),
        errors=int((status == "error").sum()),
        unfinished=int(status.isin(["running", "pending"]).sum()),
    )


def _baseline_lines(study: StudyFiles, ranking: pd.DataFrame) -> list[str]:
    """How the best setting compares with the article's baseline (or the median trial)."""
    lines: list[str] = []
    best = ranking.iloc[0]
    base_row = ranking[ranking["setting"] == BASELINE_CASE] if study.has_cases else ranking[0:0]
    if len(base_row):
        base = base_row.iloc[0]
        base_values, base_mean = base["values"], float(base["mean"])
        base_text = f"the article's baseline `sgd` ({fmt_spread(base_values)})"
    else:
        objs = finished(study.trials)[study.objective].to_numpy(dtype=float)
        objs = np.where(np.isnan(objs), np.inf, objs)
        base_values, base_mean = [], float(np.median(objs)) if objs.size else math.nan
        base_text = f"the median trial ({fmt(base_mean)})"
    best_mean = float(best["mean"])
    if study.has_cases and best["setting"] == BASELINE_CASE:
        lines.append("- **Against the baseline:** the baseline `sgd` is itself the best setting.")
    elif math.isinf(base_mean) and math.isfinite(best_mean):
        lines.append(f"- **Against the baseline:** {base_text} diverged; the best setting did not.")
    elif math.isfinite(base_mean) and math.isfinite(best_mean) and base_mean > 0:
        rel = (base_mean - best_mean) / base_mean
        times = f", {base_mean / best_mean:.3g}x lower" if best_mean > 0 else ""
        word = "lower" if rel >= 0 else "higher"
        line = f"- **Against the baseline:** {abs(rel):.1%} {word} than {base_text}{times}."
        if base_values:
            v = verdict_lower(best["values"], base_values)
            line += (
                " The seed ranges do not overlap: the gain is larger than the seed spread."
                if v == HOLDS
                else " The seed ranges overlap or the gap is under 5%: not conclusive."
            )
        lines.append(line)
    return lines


def summary_section(
    study: StudyFiles,
    ranking: pd.DataFrame,
    counts: Counts,
    claims: pd.DataFrame | None,
    edges: list[str],
) -> list[str]:
    """The actionable summary: best setting, margin over the baseline, how sure, what next."""
    lines = [H_SUMMARY, ""]
    if ranking.empty and counts.finished:
        return lines + [(f"{counts.finished} trials finished but none has a "
                         f"`{study.objective}` value: nothing to rank."), ""]
    if ranking.empty:
        return lines + ["No trial has finished yet: nothing to report beyond the counts below.",
                        ""]
    best = ranking.iloc[0]
    what = f"case `{best['setting']}`" if study.has_cases else f"trial `{best['best_trial']}`"
    config = f" ({best['config']})" if best["config"] else ""
    spread = (
        f"mean over {best['n']} seeds, min-max {fmt(best['min'])}-{fmt(best['max'])}"
        if best["n"] > 1
        else "one run only: the seed spread is unknown; re-run this setting with 3+ seeds "
        "before trusting small margins"
    )
    lines.append(
        f"- **Best setting:** {what}{config}: {study.objective} "
        f"**{fmt(best['mean'])}** ({spread})."
    )
    lines += _baseline_lines(study, ranking)
    lines.append(
        f"- **Diverged:** {counts.diverged_share()}"
        + (f"; {counts.errors} errored" if counts.errors else "")
        + "."
    )
    if claims is not None and len(claims):
        tally = claims["verdict"].value_counts()
        parts = [f"{tally.get(v, 0)} {v}" for v in (HOLDS, DOES_NOT_HOLD)]
        n_unclear = int(claims["verdict"].str.startswith(UNCLEAR).sum())
        parts.append(f"{n_unclear} unclear")
        lines.append(f"- **Claims of the article:** {', '.join(parts)} (see below).")
    if edges:
        lines.append(f"- **Edge of range ({len(edges)}):** " + "; ".join(edges) + ".")
    best_cfg = study.path / "best_config.yaml"
    if best_cfg.is_file():
        try:  # a path a reader can use from the project root, not this machine's
            best_cfg = best_cfg.resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        lines.append(
            f"- **Train the best setting:** {code(f'python -m tuner.train --config {best_cfg}')}."
        )
    command = study.meta.get("command")
    if command:
        lines.append(f"- **Reproduce the study:** {code(command_text(command))}.")
    lines.append("")
    return lines


def study_section(study: StudyFiles, ranking: pd.DataFrame, counts: Counts) -> list[str]:
    """The summary table, then the searched space and package versions."""
    search = mapping(study.meta, "search")
    best = ranking.iloc[0] if len(ranking) else None
    rows: list[tuple[str, str]] = [
        ("study", study.name),
        ("trials", str(counts.total)),
        ("completed", str(counts.completed)),
        ("early-stopped", str(counts.early_stopped)),
        ("diverged", counts.diverged_share()),
        ("errors", str(counts.errors)),
    ]
    where = study.trials.reindex(columns=["node", "device"]).dropna(how="all")
    if len(where):
        mix = where.fillna("?").astype(str).agg(" / ".join, axis=1).value_counts()
        rows.append(("ran on (node / device: trials)", "; ".join(f"{k}: {n}" for k, n in mix.items())))
    if counts.unfinished:
        rows.append(("running or pending", str(counts.unfinished)))
    if search:
        metric = f"{search.get('metric', study.objective)} ({search.get('mode', 'min')})"
        rows.append(("metric", metric))
    rows.append(("objective column", study.objective))
    if best is not None:
        label = f"case {best['setting']}" if study.has_cases else f"trial {best['best_trial']}"
        rows.append(("best objective", f"{fmt(best['mean'])} ({label}, n={best['n']})"))
        rows.append(("best config", best["config"] or "-"))
    command = study.meta.get("command")
    rows.append(("command", code(command_text(command)) if command else "- (not in study.yaml)"))
    lines = [H_STUDY, "", md_table(pd.DataFrame(rows, columns=["", "value"])), ""]
    if study.space:
        lines += [
            "Searched space (from study.yaml):",
            "",
            "```yaml",
            yaml.safe_dump(study.space, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    versions = study.meta.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    for note in study.notes:
        lines += [f"> Note: {note}", ""]
    return lines


def ablation_sections(
    study: StudyFiles, setup: AblationSetup, claims: pd.DataFrame
) -> list[str]:
    """The per-case table (with how E, S and the target were chosen) and the claims table."""
    metrics = trial_metrics(study.trials, study.epochs, setup)
    table = case_summary(metrics, setup)
    lines = [
        H_ABLATION,
        "",
        (
            f"Every cell is the mean [min-max] over the case's seeds. Loss after **E = {setup.epoch}** "
            "epochs (the shortest, over cases, of each case's longest non-diverged run) and after "
            f"**S = {fmt(setup.seconds, 3)} s** of training (the same rule on `train_time_s`; a run "
            "that ended earlier keeps its last loss, a diverged run counts as inf). Target loss "
            f"**{fmt(setup.target)}** = {setup.target_source}. A spike is an excursion above "
            f"**{setup.factor:g} x** the best loss so far, counted once per excursion (a blow-up "
            "counts). Final chunks N: the schedule's chunk count at the last epoch (1 = whole series)."
        ),
        "",
    ]
    lines += [md_table(table) if len(table) else "No finished case runs.", ""]
    lines += [H_CLAIMS, "", "Verdict rule: " + VERDICT_RULE, "", md_table(claims), ""]
    return lines


def best_table(study: StudyFiles, k: int = TOP_N) -> pd.DataFrame:
    """The ``k`` best trials with their metrics and configuration."""
    best = best_rows(finished(study.trials), study.objective, k=k)
    keys = [c for c in config_columns(study.trials)]
    rows = []
    for _, r in best.iterrows():
        row: dict[str, Any] = {"trial": r["trial_id"]}
        if study.has_cases:
            row["case"] = r.get("case", "")
        for col in (study.objective, "best_loss", "epochs", "seconds"):
            if col in r.index and col not in row:
                row[col] = fmt(float(r[col])) if pd.notna(r[col]) else "-"
        row["config"] = setting_key(r, keys)
        rows.append(row)
    return pd.DataFrame(rows)


def diverged_table(study: StudyFiles, limit: int = 20) -> pd.DataFrame:
    """Up to ``limit`` diverged trials with the epoch they blew up at and their configuration."""
    t = study.trials
    d = t[diverged_trials(t, study.objective)]
    keys = [c for c in config_columns(t)]
    rows = []
    for _, r in d.head(limit).iterrows():
        row: dict[str, Any] = {"trial": r["trial_id"]}
        if study.has_cases:
            row["case"] = r.get("case", "")
        if "diverged_epoch" in r.index:
            row["diverged at epoch"] = fmt(float(r["diverged_epoch"]))
        row["config"] = setting_key(r, keys)
        rows.append(row)
    return pd.DataFrame(rows)
