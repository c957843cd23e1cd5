"""Put a report together: load the study, compute, draw, and write ``report.md`` + plots.

`make_report` only orders sections; each section function returns its markdown lines (the
ones here also draw their plot; the text-only ones live in `tuner.report.markdown`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from tuner.core.atomic import atomic_write_text
from tuner.report.anytime import anytime_curve, study_settings
from tuner.report.anytime_plot import plot_study
from tuner.report.axes import plot_axes, searched_keys
from tuner.report.claims import AblationSetup, ablation_setup, claims_table
from tuner.report.heldout import OVERFIT_RULE, RUNNING, TRAIN, VAL, overfit_rows
from tuner.report.importance import parameter_importance, save_importance_plot
from tuner.report.load import ReportError, StudyFiles, load_study, mapping
from tuner.report.markdown import (
    H_ANYTIME,
    H_AXIS,
    H_BEST,
    H_CURVES,
    H_DIVERGED,
    H_EDGES,
    H_GRAD,
    H_IMPORTANCE,
    H_OVERFIT,
    H_SEARCH,
    Counts,
    ablation_sections,
    best_table,
    count_trials,
    diverged_table,
    study_section,
    summary_section,
)
from tuner.report.measures import rank_settings
from tuner.report.plots import (
    TOP_N,
    Group,
    curve_groups,
    palette,
    plot_curves,
    plot_gradients,
    plot_overfit,
    save_png,
    style,
)
from tuner.report.ranges import EDGE_SHARE, edge_warnings
from tuner.report.text import fmt, image, md_table


def _target_loss(study: StudyFiles) -> float | None:
    """``search.target_loss`` of study.yaml as a number, None when absent or not a number."""
    value = mapping(study.meta, "search").get("target_loss")
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _has(study: StudyFiles, column: str) -> bool:
    """Some epoch has a value in ``column``."""
    return column in study.epochs and study.epochs[column].notna().any()


def curves_section(study: StudyFiles, groups: list[Group], plots: Path) -> list[str]:
    """The running training loss (as the article measured) and the held-out loss, per epoch and
    per second of training, one line per case or best trial, with the baselines."""
    lines = [H_CURVES, ""]
    if not groups:
        return lines + ["No epochs recorded: no curves to draw.", ""]
    b = study.baselines
    kinds = [(RUNNING, "", "training loss as the article measured (running)", b.hlines(TRAIN))]
    if _has(study, VAL):
        kinds.append((VAL, "val_", "held-out loss", b.hlines(VAL)))
    for column, prefix, what, hlines in kinds:
        if not _has(study, column):
            lines += [f"No `{column}` recorded: no curve of the {what}.", ""]
            continue
        for axis, fname, label in (
            ("epoch", f"{prefix}loss_vs_epoch.png", "per epoch"),
            ("train_time_s", f"{prefix}loss_vs_seconds.png", "per second of training"),
        ):
            fig = plot_curves(study, groups, axis, f"{study.name}: {what} {label}", column, what, hlines)
            save_png(fig, plots / fname)
            lines += [image(f"plots/{fname}", f"{what} {label}"), ""]
    what = "case (mean over seeds, band = min-max)" if study.has_cases else f"the {TOP_N} best trials"
    return lines + [
        (
            f"One line per {what}. Black lines: the baselines on the same part of the "
            "data (predict zero; ridge regression on the same lags). The running loss "
            "averages the epoch's updates, so at N=100 chunks it is not comparable with "
            "N=1 (see the overfitting plot for the end-of-epoch training loss). Hollow "
            "circles: the chunk schedule moved to its next stage; red x: the last "
            "finite loss of a run that diverged."
        ),
        "",
    ]


#: At most this many overfitting runs are listed (an ablation of 30 runs fits).
OVERFIT_ROWS = 40


def overfit_section(study: StudyFiles, groups: list[Group], plots: Path) -> list[str]:
    """Training and held-out curves on one plot per case or best trial, and the warning list."""
    lines = [H_OVERFIT, ""]
    if not groups or not _has(study, VAL):
        return lines + ["No held-out loss recorded: overfitting cannot be seen.", ""]
    save_png(plot_overfit(study, groups, study.baselines.hlines(VAL)), plots / "overfit.png")
    lines += [
        image("plots/overfit.png", "training against held-out loss"),
        "",
        (
            "Solid: the end-of-epoch training loss (`train_loss`); dashed: the held-out loss "
            "(`val_loss`); black: the held-out baselines."
        ),
        "",
    ]
    ids = [t for g in groups for t in g.trial_ids]
    rows = overfit_rows(study.epochs, ids)
    rule = f"Rule: {OVERFIT_RULE}"
    if rows.empty:
        return lines + [f"No run shown here overfit by the rule. {rule}", ""]
    case = study.trials.set_index("trial_id")["case"].to_dict() if study.has_cases else {}
    table = pd.DataFrame(
        {
            "trial": rows["trial_id"],
            **({"case": [case.get(t, "") for t in rows["trial_id"]]} if case else {}),
            "gap opened (epoch)": [fmt(v) for v in rows["gap_epoch"]],
            "margin crossed (epoch)": [fmt(v) for v in rows["crossed_epoch"]],
            "held-out: min -> last": [
                f"{fmt(a)} -> {fmt(z)}" for a, z in zip(rows["val_min"], rows["val_end"], strict=True)
            ],
            "training: at min -> last": [
                f"{fmt(a)} -> {fmt(z)}" for a, z in zip(rows["train_at_min"], rows["train_end"], strict=True)
            ],
            "last epoch": [fmt(v) for v in rows["last_epoch"]],
        }
    )
    more = f"The first {OVERFIT_ROWS} of {len(table)} are listed." if len(table) > OVERFIT_ROWS else ""
    return lines + [
        (
            f"**Warning: {len(rows)} of {len(ids)} runs shown overfit** (their held-out "
            "loss rose while their training loss kept falling; the kept model is the "
            "best epoch's, see `best_epoch`)."
        ),
        "",
        rule,
        "",
        md_table(table.head(OVERFIT_ROWS)),
        "",
        *([more, ""] if more else []),
    ]


def axis_section(study: StudyFiles, plots: Path) -> list[str]:
    """The objective against each searched key."""
    lines = [H_AXIS, ""]
    keys = searched_keys(study)
    if not keys or study.objective not in study.trials.columns:
        return lines + ["No searched keys in trials.csv: no axis plot.", ""]
    save_png(plot_axes(study, keys), plots / "axis_objective.png")
    return lines + [
        image("plots/axis_objective.png", "objective against each hyperparameter"),
        "",
        (
            "Dots: finished trials (hollow: early-stopped); gold star: the best "
            "trial; red x at the top: diverged trials (objective +inf). Grey band: "
            "the searched range."
        ),
        "",
    ]


def edges_section(edges: list[str]) -> list[str]:
    """The edge-of-range warnings, or the sentence that there are none."""
    if edges:
        return [H_EDGES, "", *[f"- {w}" for w in edges], ""]
    return [
        H_EDGES,
        "",
        (
            f"No best value lies in the outer {EDGE_SHARE:.0%} of its searched "
            "range (log scale for log ranges)."
        ),
        "",
    ]


def diverged_section(study: StudyFiles, counts: Counts) -> list[str]:
    """The share of diverged trials and the table of them."""
    lines = [
        H_DIVERGED,
        "",
        (
            f"Diverged: {counts.diverged_share()}. A large share means the "
            "ranges reach unstable settings (often the learning rate's upper "
            "end): narrow them or add clipping."
        ),
        "",
    ]
    table = diverged_table(study)
    return lines + ([md_table(table), ""] if len(table) else [])


def best_section(study: StudyFiles, groups: list[Group], plots: Path) -> list[str]:
    """The best trials' table; for ablations also their curves (the curves above are cases)."""
    table = best_table(study)
    lines = [H_BEST, "", md_table(table) if len(table) else "No finished trial.", ""]
    if not (study.has_cases and not study.epochs.empty):
        return lines + (["Their curves are the training curves above.", ""] if groups else [])
    ids = [str(t) for t in table.get("trial", [])]
    best = [
        Group(f"#{i + 1} {t}", (t,), c) for i, (t, c) in enumerate(zip(ids, palette(len(ids)), strict=True))
    ]
    if best:
        fig = plot_curves(
            study,
            best,
            "epoch",
            f"{study.name}: the {TOP_N} best trials",
            TRAIN,
            "training loss (end of epoch)",
            study.baselines.hlines(TRAIN),
        )
        save_png(fig, plots / "best_trials.png")
        lines += [image("plots/best_trials.png", "best trials"), ""]
    return lines


def gradients_section(study: StudyFiles, groups: list[Group], plots: Path) -> list[str]:
    """Pre-clip gradient norms and the clipped share per epoch."""
    if not groups or "grad_norm_mean" not in study.epochs.columns:
        return [H_GRAD, "", "No gradient norms recorded.", ""]
    save_png(plot_gradients(study, groups), plots / "grad_norms.png")
    return [
        H_GRAD,
        "",
        image("plots/grad_norms.png", "gradient norms"),
        "",
        (
            "Top: mean pre-clip global gradient norm per epoch (log scale); bottom: share of "
            "optimizer steps whose gradient was clipped."
        ),
        "",
    ]


def anytime_section(study: StudyFiles, plots: Path) -> list[str]:
    """Best objective so far against cumulative compute, one line per experiment, warm-start
    points marked: how soon the search found what it found."""
    settings = study_settings(study.meta)
    if study.epochs.empty:
        return [H_ANYTIME, "", "No per-epoch results to draw it from.", ""]
    curve = anytime_curve(
        study.trials,
        study.epochs,
        settings["metric"],
        settings["mode"],
        settings["slots"],
        settings["start_from"],
    )
    if curve["best"].notna().sum() == 0:
        return [H_ANYTIME, "", f"No finite {settings['metric']} was recorded.", ""]
    label = f"best {settings['metric']} so far"
    hlines = study.baselines.hlines(VAL if "val" in str(settings["metric"]) else TRAIN)
    for axis in ("timesteps", "seconds"):
        plot_study(curve, plots / f"anytime_{axis}.png", axis=axis, ylabel=label, hlines=hlines)
    best = curve["best"].dropna()
    at = curve.loc[best.index[best == best.iloc[-1]][0]]
    return [
        H_ANYTIME,
        "",
        image("plots/anytime_timesteps.png", "best objective against time steps"),
        "",
        image("plots/anytime_seconds.png", "best objective against training seconds"),
        "",
        (
            f"The final best {settings['metric']} {fmt(best.iloc[-1])} was first reached after "
            f"{at['timesteps'] / curve['timesteps'].iloc[-1]:.0%} of the study's time steps "
            f"({fmt(at['timesteps'])} of {fmt(curve['timesteps'].iloc[-1])}); circles mark the "
            "warm-start points (`search.start_from`). Epochs are ordered by when they ended "
            "(replayed from each trial's epoch seconds on the study's concurrent slots). Black "
            "lines: the zero and ridge baselines on the same part of the data."
        ),
        "",
    ]


def importance_section(study: StudyFiles, plots: Path) -> list[str]:
    """Parameter importance from trials.csv, naming the evaluator."""
    imp, why = parameter_importance(study)
    if imp is None:
        return [H_IMPORTANCE, "", why, ""]
    save_importance_plot(imp, study.name, plots / "importance.png")
    table = pd.DataFrame({"parameter": imp.values.index, "importance": [fmt(v, 3) for v in imp.values]})
    return [
        H_IMPORTANCE,
        "",
        why,
        "",
        md_table(table),
        "",
        image("plots/importance.png", f"parameter importance ({imp.evaluator})"),
        "",
    ]


def _report_lines(study: StudyFiles, plots: Path) -> list[str]:
    """Every section of the report, in order."""
    counts = count_trials(study)
    ranking = rank_settings(study.trials, study.objective)
    edges = edge_warnings(study.trials, study.distributions, study.objective, top_k=TOP_N)
    setup: AblationSetup | None = None
    claims: pd.DataFrame | None = None
    if study.has_cases and not study.epochs.empty:
        b = study.baselines
        setup = ablation_setup(study.trials, study.epochs, _target_loss(study))
        claims = claims_table(
            study.trials, study.epochs, setup, zero_train=b.zero(TRAIN), zero_val=b.zero(VAL)
        )
    lines = [f"# Report: {study.name}", ""]
    lines += summary_section(study, ranking, counts, claims, edges)
    lines += study_section(study, ranking, counts)
    with style():
        groups = curve_groups(study) if not study.epochs.empty else []
        lines += curves_section(study, groups, plots) + overfit_section(study, groups, plots)
        if setup is not None and claims is not None:
            lines += ablation_sections(study, setup, claims)
        lines += [H_SEARCH, ""] + axis_section(study, plots) + edges_section(edges)
        lines += diverged_section(study, counts) + best_section(study, groups, plots)
        lines += gradients_section(study, groups, plots) + importance_section(study, plots)
        lines += anytime_section(study, plots)
    return lines


def make_report(study_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for the study in ``study_dir``; return report.md.

    ``out_dir`` defaults to the study folder. Raises ReportError (one line) when the folder or
    its trials.csv is missing or unusable, or the output cannot be written. Every file is
    written atomically, so a report being regenerated is never seen half-written.
    """
    study = load_study(study_dir)
    out = Path(out_dir) if out_dir is not None else study.path
    try:
        plots = out / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        lines = _report_lines(study, plots)
        report = out / "report.md"
        atomic_write_text(report, "\n".join(lines).rstrip("\n") + "\n")
    except OSError as exc:
        where = exc.filename or out
        raise ReportError(f"cannot write the report to {where}: {exc.strerror or exc}") from exc
    return report
