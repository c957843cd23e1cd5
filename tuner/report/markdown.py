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
    VERDICT_TRAIN,
    VERDICT_VAL,
    AblationSetup,
    case_summary,
    readings,
    verdict_lower,
)
from tuner.report.anytime import study_settings, warm_start_trials
from tuner.report.heldout import TRAIN, VAL, against, data_lines
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
H_OVERFIT = "## Overfitting: training against held-out loss"
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
    label = "Against the article's baseline" if len(base_row) else "Against the median trial"
    if study.has_cases and best["setting"] == BASELINE_CASE:
        lines.append(f"- **{label}:** the baseline `sgd` is itself the best setting.")
    elif math.isinf(base_mean) and math.isfinite(best_mean):
        lines.append(f"- **{label}:** {base_text} diverged; the best setting did not.")
    elif math.isfinite(base_mean) and math.isfinite(best_mean) and base_mean > 0:
        rel = (base_mean - best_mean) / base_mean
        times = f", {base_mean / best_mean:.3g}x lower" if best_mean > 0 else ""
        word = "lower" if rel >= 0 else "higher"
        line = f"- **{label}:** {abs(rel):.1%} {word} than {base_text}{times}."
        if base_values:
            v = verdict_lower(best["values"], base_values)
            line += (
                " The seed ranges do not overlap: the gain is larger than the seed spread."
                if v == HOLDS
                else " The seed ranges overlap or the gap is under 5%: not conclusive."
            )
        lines.append(line)
    return lines


def warm_start_lines(study: StudyFiles) -> list[str]:
    """How the best trial compares with the warm-start points (`search.start_from`, e.g. the
    article's best setting): a search earns its compute only by beating what was known."""
    settings = study_settings(study.meta)
    warm = warm_start_trials(study.trials, settings["start_from"])
    if not warm:
        return []
    trials = finished(study.trials).assign(trial_id=lambda t: t["trial_id"].astype(str))
    values = pd.to_numeric(trials.set_index("trial_id")[study.objective], errors="coerce")
    values = values.where(np.isfinite(values))
    if values.dropna().empty:
        return []
    best_id = values.idxmin() if settings["mode"] == "min" else values.idxmax()

    def point(i: int, trial_id: str) -> str:
        row = trials[trials["trial_id"] == trial_id]
        if row.empty:
            return f"point {i} (trial `{trial_id}`): not finished"
        status, epochs = row["status"].iloc[0], row["epochs"].iloc[0]
        ended = f"{status}, {int(epochs)} epochs" if pd.notna(epochs) else str(status)
        return f"point {i} (trial `{trial_id}`, {ended}): {fmt(values.get(trial_id, math.nan))}"

    points = "; ".join(point(i, t) for i, t in enumerate(warm, 1))
    label = "- **Against the warm-start points** (`search.start_from`):"
    if best_id in warm:
        others = len(values) - len(warm)
        return [
            f"{label} the best trial is warm-start point {warm.index(best_id) + 1} itself: "
            f"the other {others} finished trial{'s' if others != 1 else ''} found nothing "
            f"better ({points})."
        ]
    known = values.reindex(warm).dropna()
    best = f"{label} the best trial `{best_id}` reached {fmt(values[best_id])}"
    if known.empty:
        return [f"{best}; no warm-start point has a finite value ({points})."]
    ref = known.min() if settings["mode"] == "min" else known.max()
    rel = abs(values[best_id] - ref) / abs(ref) if ref else math.nan
    word = "lower" if settings["mode"] == "min" else "higher"
    return [f"{best}, {rel:.1%} {word} than the best of them ({points})."]


def _tally(verdicts: pd.Series) -> str:
    """``n holds, n does not hold, n unclear`` (or that there is no hold-out)."""
    v = verdicts.astype(str)
    if not v.str.startswith((HOLDS, DOES_NOT_HOLD, UNCLEAR)).any():
        return "none decided (no hold-out)"
    parts = [f"{int((v == k).sum())} {k}" for k in (HOLDS, DOES_NOT_HOLD)]
    return ", ".join(parts + [f"{int(v.str.startswith(UNCLEAR).sum())} unclear"])


def _held_out(study: StudyFiles, trial_ids: list[str], column: str = "best_val_loss") -> float:
    """Mean best_val_loss (the held-out loss of the kept model; ``column`` val_loss: of the last
    epoch) over the given trials."""
    t = study.trials
    if column not in t.columns:
        return math.nan
    v = pd.to_numeric(t.loc[t["trial_id"].isin(trial_ids), column], errors="coerce")
    v = v.dropna()
    return float(v.mean()) if len(v) else math.nan


def _setting_trials(study: StudyFiles, setting: pd.Series) -> list[str]:
    """The trial ids behind one row of rank_settings (a case's seeds, or one trial)."""
    if study.has_cases:
        case = study.trials["case"].astype(str).str.strip()
        return list(study.trials.loc[case == str(setting["setting"]), "trial_id"].astype(str))
    return [str(setting["best_trial"])]


def heldout_lines(study: StudyFiles, ranking: pd.DataFrame) -> list[str]:
    """The first lines of the summary: the best setting's held-out loss against the baselines,
    and a plain warning when it does not beat the ridge baseline."""
    b = study.baselines
    best = ranking.iloc[0]
    what = f"case `{best['setting']}`" if study.has_cases else f"trial `{best['best_trial']}`"
    val = _held_out(study, _setting_trials(study, best))
    seeds = " (mean over seeds)" if study.has_cases else ""
    if not math.isfinite(val):
        ridge = (
            (
                f"; its training loss against the ridge baseline's training loss "
                f"{fmt(b.ridge_train)} is all there is"
            )
            if b.known
            else ""
        )
        return [
            (
                f"- **No held-out data:** every loss in this report is on the training "
                f"series, so nothing here says how well {what} predicts data it has not "
                f"seen{ridge}. Set `data.val_fraction` or `data.val_series`."
            )
        ]
    if not b.has_val:
        return [
            f"- **Held-out loss of the best setting:** {what}: {fmt(val)}{seeds} (study.yaml "
            "states no baselines to compare it with)."
        ]
    vs = against(val, b.ridge_val, "ridge")
    last = _held_out(study, _setting_trials(study, best), "val_loss")
    zero = (
        f"; the zero predictor's is {fmt(b.zero_val)}. That is the held-out loss of the best "
        "epoch (the model `best_epoch` keeps), chosen on the same held-out data, so it is "
        "slightly optimistic"
        + (
            f"; at the last epoch it was {fmt(last)}"
            if math.isfinite(last) and abs(last - val) > 1e-9
            else ""
        )
    )
    if val < b.ridge_val:
        return [
            f"- **Held-out truth:** the best setting, {what}, beats the ridge baseline: {vs}{seeds}{zero}."
        ]
    metric = mapping(study.meta, "search").get("metric") or study.objective
    lines = [
        f"- **Warning: the best setting does not beat the ridge baseline on held-out "
        f"data.** {what} (best by `{metric}`): {vs}{seeds}{zero}. A linear model "
        "on the same lags predicts unseen data as well or better."
    ]
    per = {str(r["setting"]): _held_out(study, _setting_trials(study, r)) for _, r in ranking.iterrows()}
    per = {k: v for k, v in per.items() if math.isfinite(v)}
    if per and min(per, key=per.__getitem__) != str(best["setting"]):
        top = min(per, key=per.__getitem__)
        name = f"case `{top}`" if study.has_cases else f"trial `{top}`"
        word = "beats it" if per[top] < b.ridge_val else "does not beat it either"
        lines.append(
            f"- **Best on held-out data:** {name}: {against(per[top], b.ridge_val, 'ridge')}: {word}."
        )
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
        return lines + [
            (f"{counts.finished} trials finished but none has a `{study.objective}` value: nothing to rank."),
            "",
        ]
    if ranking.empty:
        return lines + ["No trial has finished yet: nothing to report beyond the counts below.", ""]
    lines += heldout_lines(study, ranking)
    best = ranking.iloc[0]
    what = f"case `{best['setting']}`" if study.has_cases else f"trial `{best['best_trial']}`"
    config = f" ({best['config']})" if best["config"] else ""
    spread = (
        f"mean over {best['n']} seeds, min-max {fmt(best['min'])}-{fmt(best['max'])}"
        if best["n"] > 1
        else "one run only: the seed spread is unknown; re-run this setting with 3+ seeds "
        "before trusting small margins"
    )
    lines.append(f"- **Best setting:** {what}{config}: {study.objective} **{fmt(best['mean'])}** ({spread}).")
    lines += _baseline_lines(study, ranking) + warm_start_lines(study)
    lines.append(
        f"- **Diverged:** {counts.diverged_share()}"
        + (f"; {counts.errors} errored" if counts.errors else "")
        + "."
    )
    if claims is not None and len(claims):
        lines.append(
            f"- **Claims of the article:** {_tally(claims[VERDICT_TRAIN])} as the "
            f"article measured (training loss); {_tally(claims[VERDICT_VAL])} on "
            "held-out data (see below)."
        )
    if edges:
        lines.append(f"- **Edge of range ({len(edges)}):** " + "; ".join(edges) + ".")
    best_cfg = study.path / "best_config.yaml"
    if best_cfg.is_file():
        try:  # a path a reader can use from the project root, not this machine's
            best_cfg = best_cfg.resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        lines.append(f"- **Train the best setting:** {code(f'python -m tuner.train --config {best_cfg}')}.")
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
    data = data_lines(study.meta)
    lines += (
        [*data, ""]
        if data
        else [
            "study.yaml states no data constants, split or "
            "baselines (a study from before they were recorded).",
            "",
        ]
    )
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


def seed_statement(study: StudyFiles) -> str:
    """What a seed varies in this study, read from its space: the data too, or only training."""
    keys = set(study.space) if isinstance(study.space, dict) else set()
    data_seed = mapping(study.meta, "data").get("seed", 0)
    if "data.seed" in keys:
        return (
            "**Seeds:** each seed draws new data (`data.seed` is searched) as well as new "
            "weights, noise and batch order, so the seed spread includes data variation."
        )
    return (
        "**Seeds:** `train.seed` varies the weights' initialisation, the noise layer and the "
        f"batch order only; every seed trains on the same series (`data.seed` = {data_seed} "
        "throughout), so the seed spread is over training randomness, not over data sets."
    )


def ablation_sections(study: StudyFiles, setup: AblationSetup, claims: pd.DataFrame) -> list[str]:
    """The per-case table (with how E, S, U and the target were chosen) and the claims table."""
    b = study.baselines
    r = readings(study.trials, study.epochs, setup, b.zero(TRAIN), b.zero(VAL))
    table = case_summary(r, setup) if TRAIN in r else pd.DataFrame()
    if len(table) and b.has_val:
        table["best held-out vs ridge"] = [
            against(
                _held_out(study, _setting_trials(study, pd.Series({"setting": c}))), b.ridge_val, "ridge", ""
            ).strip()
            for c in table["case"]
        ]
    lines = [
        H_ABLATION,
        "",
        (
            f"Every cell is the mean [min-max] over the case's seeds. Loss after **E = {setup.epoch}** "
            "epochs (the shortest, over cases, of each case's longest non-diverged run) and after "
            f"**S = {fmt(setup.seconds, 3)} s** of training (the same rule on `train_time_s`; a run "
            "that ended earlier keeps its last loss, a diverged run counts as inf). Three losses: "
            "the *running* training loss (`train_loss_running`: averaged over the epoch's updates, "
            "as the article and Keras report it; at N=100 chunks it averages 100 different models, "
            "so it does not compare across N), the end-of-epoch *training* loss (`train_loss`: "
            "the model at the epoch's end, eval mode, state from zero: comparable across N) and "
            "the *held-out* loss (`val_loss`). Updates: optimizer steps made by epoch E (one per "
            "chunk per epoch), so a per-epoch comparison says how much training each case had. "
            f"Target loss **{fmt(setup.target)}** = {setup.target_source}. A spike is an excursion "
            f"above **{setup.factor:g} x** the best loss so far, counted once per excursion (a "
            "blow-up counts). Final chunks N: the schedule's chunk count at the last epoch (1 = "
            "whole series). Best held-out vs ridge: each case's mean `best_val_loss` against the "
            "ridge baseline's held-out loss."
        ),
        "",
        seed_statement(study),
        "",
    ]
    lines += [md_table(table) if len(table) else "No finished case runs.", ""]
    if not len(claims):
        return lines + [
            H_CLAIMS,
            "",
            (
                "No claims checked: epochs.csv lacks `train_loss_running` "
                "or `train_loss` (see the note above)."
            ),
            "",
        ]
    lines += [H_CLAIMS, "", "Verdict rule: " + VERDICT_RULE, "", CLAIMS_MEASURES, "", md_table(claims), ""]
    return lines


CLAIMS_MEASURES = (
    f"Two verdicts per claim. *{VERDICT_TRAIN}*: the running training loss (`train_loss_running`) "
    "where every compared case trains whole series (claims 1-2), and the end-of-epoch training "
    "loss (`train_loss`) where a chunk schedule is compared (claims 3-4), since the running loss "
    f"is not comparable across chunk counts. *{VERDICT_VAL}*: the held-out loss (`val_loss`) "
    "throughout. Measures: 1a-1c and 2e, the gain after E epochs, with the optimizer updates made "
    "by then; 1d and 2a-2c, spikes per run; 2d, roughness: the mean epoch-to-epoch rise of the "
    "loss in units of the zero predictor's loss (the same wobble counts the same at any loss "
    "level); 3a-3c, the mean gain over an early window (the area under the early curve: epochs "
    "1 to E/5; the first S/5 seconds; optimizer updates from the first update count at which "
    "every run had been measured to U/5, U being the same rule as E on `updates`); 4, the gain "
    "after S seconds against every other case."
)


def best_table(study: StudyFiles, k: int = TOP_N) -> pd.DataFrame:
    """The ``k`` best trials with their metrics and configuration."""
    best = best_rows(finished(study.trials), study.objective, k=k)
    keys = [c for c in config_columns(study.trials)]
    rows = []
    for _, r in best.iterrows():
        row: dict[str, Any] = {"trial": r["trial_id"]}
        if study.has_cases:
            row["case"] = r.get("case", "")
        for col in (study.objective, "best_val_loss", "best_epoch", "train_loss", "epochs", "seconds"):
            if col in r.index and col not in row:
                row[col] = fmt(float(r[col])) if pd.notna(r[col]) else "-"
        ridge = study.baselines.ridge_val
        val = float(r["best_val_loss"]) if pd.notna(r.get("best_val_loss")) else math.nan
        if math.isfinite(ridge) and math.isfinite(val):
            row["held-out vs ridge"] = against(val, ridge, "ridge", "").strip()
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
