"""Tests of tuner.report on tiny study folders built by hand in tmp_path.

The fixtures write trials.csv / epochs.csv / study.yaml the way tuner.results lays them out, with
loss curves shaped on purpose: in one ablation every claim of the article holds, in another each
one fails (SGD beating Adam, clipping adding spikes, ...), so the verdicts in the report must
follow from the numbers and not from the case names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tuner import report
from tuner.report import claims as cl

EPOCHS = 60
SEEDS = (0, 1, 2)
SCHEDULE = (100, 50, 10, 2, 1)
# Under pytest-xdist, one worker runs this module, so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("report")


@dataclass(frozen=True)
class Curve:
    """Shape of one case's loss curve: floor + (start - floor) * exp(-rate * epoch), with the
    loss multiplied by ``spike_mult`` at the ``spikes`` epochs (one-epoch spikes)."""

    floor: float
    rate: float
    spikes: tuple[int, ...] = ()
    spike_mult: float = 3.0
    start: float = 2.0
    sec_per_epoch: float = 1.0
    schedule: bool = False
    optimizer: str = "sgd"
    clip: str = "none"
    overfit_from: int | None = None
    """Held-out loss: 1.1 x the training loss, rising by 3% of its minimum per epoch after
    this epoch (None: never)."""


def _epoch_rows(
    trial_id: str, c: Curve, seed: int, epochs: int = EPOCHS, diverge_at: int | None = None
) -> list[dict]:
    """Per-epoch rows of one run; seeds scale the loss by 1% each, so seed ranges are narrow."""
    rows = []
    updates = 0
    best_val, best_epoch = math.inf, 0
    for e in range(1, epochs + 1):
        loss = (c.floor + (c.start - c.floor) * math.exp(-c.rate * e)) * (1 + 0.01 * seed)
        if e in c.spikes:
            loss *= c.spike_mult
        if diverge_at is not None and e == diverge_at:
            loss = math.inf
        stage = min((e - 1) // 15, len(SCHEDULE) - 1) if c.schedule else 0
        chunks = SCHEDULE[stage] if c.schedule else 1
        updates += chunks
        val = loss * 1.1
        if c.overfit_from is not None and e > c.overfit_from:
            base = c.floor + (c.start - c.floor) * math.exp(-c.rate * c.overfit_from)
            val = base * 1.1 * (1 + 0.01 * seed) * (1 + 0.03 * (e - c.overfit_from))
        if val < best_val:
            best_val, best_epoch = val, e
        rows.append(
            {
                "trial_id": trial_id,
                "epoch": e,
                "train_loss_running": loss,
                "train_loss": loss,
                "val_loss": val,
                "best_val_loss": best_val,
                "best_epoch": best_epoch,
                "chunks": chunks,
                "stage": stage,
                "lr": 0.01,
                "grad_norm_mean": 2.0 / e + (5.0 if e in c.spikes else 0.0),
                "grad_norm_max": 4.0 / e,
                "clip_fraction": 0.5 if c.clip != "none" else 0.0,
                "epoch_time_s": c.sec_per_epoch,
                "steps_per_s": chunks / c.sec_per_epoch,
                "eval_time_s": 0.1,
                "timesteps": 15 * 20000 * e,
                "updates": updates,
                "train_time_s": c.sec_per_epoch * e * (1 + 0.001 * seed),
            }
        )
        if diverge_at is not None and e == diverge_at:
            break
    return rows


def _trial_row(trial_id: str, rows: list[dict], extra: dict) -> dict:
    """The trials.csv row summarising a run's epoch rows."""
    losses = np.array([r["train_loss"] for r in rows], dtype=float)
    vals = np.array([r["val_loss"] for r in rows], dtype=float)
    diverged = not np.isfinite(losses[-1])
    return {
        "trial_id": trial_id,
        "status": "diverged" if diverged else "completed",
        **extra,
        "objective": math.inf if diverged else float(losses[-1]),
        "train_loss": losses[-1],
        "best_train_loss": float(np.min(losses[np.isfinite(losses)])),
        "val_loss": vals[-1],
        "best_val_loss": rows[-1]["best_val_loss"],
        "best_epoch": rows[-1]["best_epoch"],
        "auc": float(np.mean(losses)),
        "epochs": len(rows),
        "timesteps": rows[-1]["timesteps"],
        "seconds": rows[-1]["train_time_s"],
        "diverged_epoch": len(rows) if diverged else "",
        "error": "",
    }


#: study.yaml's data constants, split and baselines, as tuner.core.baselines.reference writes them.
REFERENCE = {
    "data_constants": {
        "source": "synthetic",
        "preset": "two-modes",
        "period_a": 50.0,
        "period_b": 230.0,
        "freq_a": 0.1257,
        "freq_b": 0.02732,
        "noise_std": 0.1,
        "walk_step": 0.01,
        "n_series": 10,
        "length": 4000,
        "seed": 0,
    },
    "split": {
        "window": 128,
        "val_fraction": 0.0,
        "train_series": 8,
        "train_steps": 31000,
        "val_series": 2,
        "val_steps": 7750,
        "val_whole_series": 2,
    },
    "baselines": {"zero": {"train": 1.0, "val": 1.1}, "ridge": {"train": 0.8, "val": 0.9, "alpha": 0.001}},
}


def write_study(path: Path, trials: list[dict], epochs: list[dict], meta: dict) -> Path:
    """Write a study folder (trials.csv, epochs.csv, study.yaml) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(trials).to_csv(path / "trials.csv", index=False)
    pd.DataFrame(epochs).to_csv(path / "epochs.csv", index=False)
    (path / "study.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


def _case_entry(name: str, c: Curve) -> dict:
    """The space file's entry of one named case: the keys it sets."""
    entry = {"name": name, "train.optimizer": c.optimizer, "train.clip.mode": c.clip}
    if c.schedule:
        entry["train.schedule.chunks"] = list(SCHEDULE)
    return entry


def ablation_study(path: Path, curves: dict[str, Curve], target_loss: float | None = None) -> Path:
    """An ablation study folder: every case in ``curves`` x SEEDS, with a ``case`` column."""
    trials, epochs = [], []
    for case, c in curves.items():
        for seed in SEEDS:
            tid = f"{case}_s{seed}"
            rows = _epoch_rows(tid, c, seed)
            epochs += rows
            extra = {
                "case": case,
                "train.optimizer": c.optimizer,
                "train.lr": 0.01,
                "train.clip.mode": c.clip,
                "train.schedule.chunks": ",".join(map(str, SCHEDULE)) if c.schedule else "1",
                "train.seed": seed,
                "seed": seed,
            }
            trials.append(_trial_row(tid, rows, extra))
    search = {"algorithm": "grid", "metric": "train_loss", "mode": "min", "num_samples": 1}
    if target_loss is not None:
        search["target_loss"] = target_loss
    meta = {
        "name": path.name,
        "data": {"preset": "two-modes"},
        "model": {"lstm_units": 64},
        "train": {"max_epochs": EPOCHS},
        "space": {
            "case": {"grid": [_case_entry(n, c) for n, c in curves.items()]},
            "train.seed": {"grid": list(SEEDS)},
        },
        "search": search,
        **REFERENCE,
        "command": f"python -m tuner.search search_spaces/ablation.yaml --name {path.name}",
        "versions": {"torch": "2.5.0", "ray": "2.60.0", "optuna": "5.0.0"},
    }
    return write_study(path, trials, epochs, meta)


# Curves under which every claim of the article holds (numbers worked out in the comments).
HOLDING = {
    "sgd": Curve(floor=1.0, rate=0.002),  # slow: 1.89 after 60 epochs (and 60 updates)
    "rmsprop": Curve(floor=0.5, rate=0.05, spikes=(30,), spike_mult=2.5, optimizer="rmsprop"),
    "adam": Curve(floor=0.3, rate=0.08, spikes=(20, 40), optimizer="adam"),  # best, 2 spikes
    "rmsprop-clip": Curve(floor=0.5, rate=0.05, optimizer="rmsprop", clip="norm"),
    "adam-clip": Curve(floor=0.3, rate=0.08, optimizer="adam", clip="norm"),
    # 1.71 after its first epoch (100 updates): better per update too than sgd's 1.89 at 60
    "sgd-schedule": Curve(floor=0.9, rate=0.3, sec_per_epoch=1.2, schedule=True),
    "adam-clip-schedule": Curve(
        floor=0.1, rate=0.15, sec_per_epoch=1.2, schedule=True, optimizer="adam", clip="norm"
    ),
    "adam-adaptive-clip": Curve(floor=0.35, rate=0.08, optimizer="adam", clip="adaptive"),
    "adagrad": Curve(floor=0.8, rate=0.03, optimizer="adagrad"),
    "adadelta": Curve(floor=1.2, rate=0.02, optimizer="adadelta"),
}

# Curves under which every claim fails the other way round.
FAILING = {
    "sgd": Curve(floor=0.1, rate=0.15),  # SGD is fastest
    "rmsprop": Curve(floor=0.5, rate=0.05, spikes=(20, 40), optimizer="rmsprop"),  # 2 spikes
    "adam": Curve(floor=0.8, rate=0.03, spikes=(30,), optimizer="adam"),  # worse, 1 spike
    "rmsprop-clip": Curve(floor=0.6, rate=0.05, spikes=(15, 30, 45), optimizer="rmsprop", clip="norm"),
    "adam-clip": Curve(floor=1.0, rate=0.03, spikes=(15, 30, 45), optimizer="adam", clip="norm"),
    "sgd-schedule": Curve(floor=1.5, rate=0.01, sec_per_epoch=1.2, schedule=True),
    "adam-clip-schedule": Curve(
        floor=2.0,
        rate=0.005,
        start=2.5,
        sec_per_epoch=1.2,
        schedule=True,
        optimizer="adam",
        clip="norm",
    ),
    "adam-adaptive-clip": Curve(floor=0.9, rate=0.03, spikes=(15, 30, 45), optimizer="adam", clip="adaptive"),
    "adagrad": Curve(floor=0.7, rate=0.03, optimizer="adagrad"),
    "adadelta": Curve(floor=1.2, rate=0.02, optimizer="adadelta"),
}

SECTIONS_ALWAYS = [
    report.H_SUMMARY,
    report.H_STUDY,
    report.H_CURVES,
    report.H_SEARCH,
    report.H_AXIS,
    report.H_EDGES,
    report.H_DIVERGED,
    report.H_BEST,
    report.H_GRAD,
    report.H_IMPORTANCE,
]


def _image_links(text: str) -> list[str]:
    """Relative targets of the markdown image links in a report."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def _verdicts(path: Path, column: str = cl.VERDICT_TRAIN) -> dict[str, str]:
    """Claim -> verdict in ``column``, recomputed from the folder's files with the report's own
    reader and study.yaml's zero-predictor losses."""
    study = report.load_study(path)
    b = study.baselines
    claims = cl.claims_table(
        study.trials, study.epochs, zero_train=b.zero("train_loss"), zero_val=b.zero("val_loss")
    )
    return dict(zip(claims["claim"], claims[column], strict=True))


@pytest.fixture(scope="module")
def holding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ablation folder, reported once, where every claim holds."""
    path = ablation_study(tmp_path_factory.mktemp("abl") / "ablation-holds", HOLDING)
    report.make_report(path)
    return path


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ablation folder where every claim fails."""
    return ablation_study(tmp_path_factory.mktemp("abl") / "ablation-fails", FAILING)


# --------------------------------------------------------------------------------------------
# Ablation studies
# --------------------------------------------------------------------------------------------


def test_report_ablation_has_every_section_and_plot(holding: Path) -> None:
    text = (holding / "report.md").read_text()
    # Rule: every section is present, in order, ablation sections included.
    expected = [*SECTIONS_ALWAYS[:3], report.H_ABLATION, report.H_CLAIMS, *SECTIONS_ALWAYS[3:]]
    positions = [text.index(h + "\n") for h in expected]
    assert positions == sorted(positions)
    # Rule: every plot is a PNG under plots/, linked relatively, and every link resolves.
    links = _image_links(text)
    for name in ("loss_vs_epoch", "loss_vs_seconds", "axis_objective", "best_trials", "grad_norms"):
        assert f"plots/{name}.png" in links
    for link in links:
        assert not Path(link).is_absolute()
        png = holding / link
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No temporary files left behind by the atomic writes.
    assert not [p for p in holding.rglob("*.tmp")]


def test_report_ablation_states_rule_target_and_factor(holding: Path) -> None:
    text = (holding / "report.md").read_text()
    assert "Verdict rule:" in text and "do not overlap" in text
    # Rule: without search.target_loss the target is the median of the cases' mean final losses,
    # and the report says so.
    assert "the median over cases of their mean final loss" in text
    assert "**1.5 x** the best loss so far" in text
    # Rule: the command that reproduces the study is shown.
    assert "python -m tuner.search search_spaces/ablation.yaml --name ablation-holds" in text


def test_claims_hold_when_curves_say_so(holding: Path) -> None:
    # Rule: every claim's difference is beyond the seed spread in the claimed direction, on the
    # training loss as the article measured it and on the held-out loss (1.1 x it here).
    for column in (cl.VERDICT_TRAIN, cl.VERDICT_VAL):
        verdicts = _verdicts(holding, column)
        assert len(verdicts) == 13
        assert verdicts == {claim: cl.HOLDS for claim in verdicts}
    text = (holding / "report.md").read_text()
    assert (
        "13 holds, 0 does not hold, 0 unclear as the article measured (training loss); "
        "13 holds, 0 does not hold, 0 unclear on held-out data"
    ) in text


def test_claims_do_not_hold_when_curves_contradict(failing: Path) -> None:
    # Rule: SGD beating Adam, clipping adding spikes, etc. -> "does not hold", each one.
    for column in (cl.VERDICT_TRAIN, cl.VERDICT_VAL):
        verdicts = _verdicts(failing, column)
        assert verdicts == {claim: cl.DOES_NOT_HOLD for claim in verdicts}
    report.make_report(failing)
    text = (failing / "report.md").read_text()
    assert "0 holds, 13 does not hold, 0 unclear as the article measured" in text
    # Rule: the summary names the best setting and compares it with the sgd baseline;
    # here sgd itself is best.
    assert "- **Best setting:** case `sgd`" in text
    assert "the baseline `sgd` is itself the best setting" in text


def test_summary_quantifies_gain_over_baseline(holding: Path) -> None:
    text = (holding / "report.md").read_text()
    summary = text.split(report.H_STUDY)[0]
    assert "- **Best setting:** case `adam-clip-schedule`" in summary
    assert "mean over 3 seeds, min-max" in summary
    assert "lower than the article's baseline `sgd`" in summary
    assert "larger than the seed spread" in summary


def test_missing_cases_make_claims_unclear(tmp_path: Path) -> None:
    # Rule: a claim whose cases were not run is "unclear (case missing)", naming the case.
    path = ablation_study(tmp_path / "partial", {k: HOLDING[k] for k in ("sgd", "adam")})
    study = report.load_study(path)
    claims = cl.claims_table(study.trials, study.epochs).set_index("claim")
    assert claims.loc["1b. Adam beats SGD", cl.VERDICT_TRAIN] == cl.HOLDS
    assert claims.loc["1a. RMSprop beats SGD", cl.VERDICT_TRAIN] == cl.CASE_MISSING
    assert claims.loc["1a. RMSprop beats SGD", cl.VERDICT_VAL] == cl.CASE_MISSING
    assert claims.loc["1a. RMSprop beats SGD", "measured (training)"] == "case missing: rmsprop"
    most = "4. Adam + clipping + schedule is the most efficient of all"
    assert claims.loc[most, cl.VERDICT_TRAIN] == cl.CASE_MISSING


def test_overlapping_seeds_make_claims_unclear(tmp_path: Path) -> None:
    # Rule: when one seed of Adam is as bad as SGD, the ranges overlap: unclear, not holds.
    curves = {"sgd": HOLDING["sgd"], "adam": HOLDING["adam"]}
    path = ablation_study(tmp_path / "overlap", curves)
    epochs = pd.read_csv(path / "epochs.csv", dtype={"trial_id": str})
    bad = epochs["trial_id"] == "adam_s2"
    for col in ("train_loss_running", "train_loss", "val_loss"):
        epochs.loc[bad, col] = epochs.loc[bad, col] * 10
    epochs.to_csv(path / "epochs.csv", index=False)
    assert _verdicts(path)["1b. Adam beats SGD"] == cl.UNCLEAR


def test_target_loss_from_study_yaml_is_used(tmp_path: Path) -> None:
    path = ablation_study(tmp_path / "tgt", {k: HOLDING[k] for k in ("sgd", "adam")}, target_loss=0.75)
    out = report.make_report(path, tmp_path / "out")
    text = out.read_text()
    # Rule: search.target_loss wins over the median rule, and the report says so.
    assert "**0.75** = search.target_loss of study.yaml" in text
    # Rule: --out puts report.md and plots/ there, not in the study folder.
    assert out == tmp_path / "out" / "report.md"
    assert (tmp_path / "out" / "plots" / "loss_vs_epoch.png").is_file()
    assert not (path / "report.md").exists()


def test_report_states_data_split_baselines_and_seeds(holding: Path) -> None:
    text = (holding / "report.md").read_text()
    study = text.split(report.H_STUDY)[1].split(report.H_CURVES)[0]
    # Rule: the data's constants, the split and both baselines come from study.yaml.
    assert "preset `two-modes`: two waves with periods 50 and 230 steps, noise std 0.1" in study
    assert "8 training series, 31,000 training steps; held out: 7,750 steps (2 whole series)" in study
    assert "predict zero: train 1, held-out 1.1; ridge on the same lags" in study
    # Rule: what a seed varies is said as it is: here data.seed is not searched.
    assert "every seed trains on the same series (`data.seed` = 0 throughout)" in text
    # Rule: a per-epoch comparison states the optimizer updates behind it (claim 3a: 12 epochs
    # are 1,200 updates at N=100 and 12 at N=1).
    assert "optimizer updates by epoch 12: sgd-schedule 1,200, sgd 12" in text
    # Rule: the best case is stated against the ridge baseline at the top of the summary.
    summary = text.split(report.H_STUDY)[0].split(report.H_SUMMARY)[1].strip().splitlines()
    assert summary[0].startswith(
        "- **Held-out truth:** the best setting, case "
        "`adam-clip-schedule`, beats the ridge baseline: held-out loss"
    )
    assert "vs ridge 0.9: 88% better" in summary[0]


def test_curves_carry_the_baselines(holding: Path) -> None:
    from tuner.report.plots import curve_groups, plot_curves

    study = report.load_study(holding)
    b = study.baselines
    fig = plot_curves(
        study, curve_groups(study), "epoch", "t", "val_loss", "held-out loss", b.hlines("val_loss")
    )
    labels = [line.get_label() for line in fig.axes[0].lines]
    # Rule: both baselines are labelled horizontal lines on the held-out curves.
    assert "zero predictor, held-out (1.1)" in labels and "ridge predictor, held-out (0.9)" in labels
    text = (holding / "report.md").read_text()
    for name in ("val_loss_vs_epoch", "val_loss_vs_seconds", "overfit", "anytime_timesteps"):
        assert f"plots/{name}.png" in _image_links(text)


def test_overfitting_is_listed_and_can_flip_the_held_out_verdict(tmp_path: Path) -> None:
    # adam's held-out loss bottoms out at epoch 10 and climbs 3% of that minimum per epoch
    # (9% above it at epoch 13, 12% at epoch 14) while its training loss keeps falling.
    curves = {"sgd": HOLDING["sgd"], "adam": Curve(floor=0.3, rate=0.08, optimizer="adam", overfit_from=10)}
    path = ablation_study(tmp_path / "over", curves)
    text = report.make_report(path).read_text()
    section = text.split(report.H_OVERFIT)[1].split("\n## ")[0]
    # Rule: the warning lists exactly the runs that overfit, the epoch the gap opened, and the
    # rule with its margin.
    assert "**Warning: 3 of 6 runs shown overfit**" in section
    assert "10% above its own minimum" in section
    for seed in SEEDS:
        assert re.search(rf"\| adam_s{seed} \| adam \| 10 \| 14 \|", section)
    assert "sgd_s0" not in section
    # Rule: the two verdict columns are decided separately: Adam beats SGD on the training loss
    # but not on held-out data (2.78 against sgd's 2.08 after 60 epochs).
    assert _verdicts(path, cl.VERDICT_TRAIN)["1b. Adam beats SGD"] == cl.HOLDS
    assert _verdicts(path, cl.VERDICT_VAL)["1b. Adam beats SGD"] == cl.DOES_NOT_HOLD


def test_summary_says_first_when_ridge_is_not_beaten(tmp_path: Path) -> None:
    path = plain_study(tmp_path / "ridge", n=12)
    meta = yaml.safe_load((path / "study.yaml").read_text())
    meta["baselines"]["ridge"]["val"] = 0.05  # better than every trial's held-out loss
    (path / "study.yaml").write_text(yaml.safe_dump(meta))
    text = report.make_report(path).read_text()
    first = text.split(report.H_SUMMARY)[1].strip().splitlines()[0]
    # Rule: a search whose best trial does not beat ridge on held-out data says so first.
    assert first.startswith(
        "- **Warning: the best setting does not beat the ridge baseline on held-out data.**"
    )
    assert "vs ridge 0.05" in first and "worse" in first


def test_summary_says_first_when_there_is_no_hold_out(tmp_path: Path) -> None:
    # Rule: without held-out losses the summary's first line says nothing here is on unseen
    # data, and the overfitting section says it cannot be seen.
    path = plain_study(tmp_path / "nohold", n=12)
    for name in ("trials.csv", "epochs.csv"):
        table = pd.read_csv(path / name)
        for col in ("val_loss", "best_val_loss"):
            table[col] = math.nan
        table.to_csv(path / name, index=False)
    text = report.make_report(path).read_text()
    first = text.split(report.H_SUMMARY)[1].strip().splitlines()[0]
    assert first.startswith("- **No held-out data:** every loss in this report is on the training series")
    assert "No held-out loss recorded: overfitting cannot be seen." in text


def test_old_study_columns_are_a_note_not_a_crash(tmp_path: Path) -> None:
    # Rule: a study written before the held-out columns (one `loss` column) is reported with a
    # note naming the missing columns; no KeyError.
    path = ablation_study(tmp_path / "old", {k: HOLDING[k] for k in ("sgd", "adam")})
    epochs = pd.read_csv(path / "epochs.csv")
    epochs = epochs.rename(columns={"train_loss_running": "loss"}).drop(
        columns=["train_loss", "val_loss", "best_val_loss", "best_epoch", "eval_time_s"]
    )
    epochs.to_csv(path / "epochs.csv", index=False)
    text = report.make_report(path).read_text()
    assert "epochs.csv has no column train_loss_running, train_loss, val_loss" in text
    assert "a study written before the held-out split: re-run it" in text
    assert "No held-out loss recorded" in text
    assert "No claims checked: epochs.csv lacks" in text


# --------------------------------------------------------------------------------------------
# A plain search (no case column)
# --------------------------------------------------------------------------------------------

SEARCH_SPACE = {
    "train.optimizer": {"choice": ["sgd", "rmsprop", "adam"]},
    "train.lr": {"loguniform": [1e-4, 0.1]},
    "train.clip.mode": {"choice": ["none", "norm"]},
    "train.clip.threshold": {"uniform": [0.5, 5.0], "if": {"train.clip.mode": ["norm"]}},
}


def plain_study(path: Path, n: int = 16) -> Path:
    """A random search where lower loss comes with larger lr, so the best lr (0.098) sits at the
    upper edge of [1e-4, 0.1]; three sgd trials at large lr diverge and one errors."""
    rng = np.random.default_rng(0)
    lrs = np.exp(rng.uniform(math.log(2e-4), math.log(0.05), size=n))
    lrs[0] = 0.098
    trials, epochs = [], []
    for i, lr in enumerate(lrs):
        tid = f"t{i:03d}"
        opt = ["adam", "rmsprop", "sgd"][i % 3]
        clip = "norm" if i % 2 == 0 else "none"
        floor = 0.2 + 0.1 * (-math.log10(lr))  # larger lr -> lower loss
        diverge = 8 if i in (4, 7, 10) else None
        rows = _epoch_rows(tid, Curve(floor=floor, rate=0.3, clip=clip), 0, epochs=12, diverge_at=diverge)
        extra = {
            "case": "",
            "train.optimizer": opt,
            "train.lr": lr,
            "train.clip.mode": clip,
            "train.clip.threshold": round(1.0 + 0.2 * i, 2) if clip == "norm" else "",
            "seed": 0,
            "node": "10.0.0.1",
            "device": "cuda:0 (NVIDIA H200)" if i < 4 else "cpu",
        }
        epochs += rows
        trials.append(_trial_row(tid, rows, extra))
    trials.append(
        {
            "trial_id": "t999",
            "status": "error",
            "case": "",
            "train.optimizer": "adam",
            "train.lr": 0.001,
            "train.clip.mode": "none",
            "objective": "",
            "error": "RuntimeError: boom",
        }
    )
    meta = {
        "name": path.name,
        "space": SEARCH_SPACE,
        "search": {"algorithm": "random", "metric": "train_loss", "mode": "min", "num_samples": n},
        **REFERENCE,
        "command": f"python -m tuner.search search_spaces/lr.yaml --name {path.name}",
    }
    return write_study(path, trials, epochs, meta)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain search folder (no optuna.db), reported once."""
    path = plain_study(tmp_path_factory.mktemp("plain") / "lr-search", n=16)
    report.make_report(path)
    return path


def test_plain_search_report(plain: Path) -> None:
    text = (plain / "report.md").read_text()
    for header in SECTIONS_ALWAYS:
        assert header + "\n" in text
    # Rule: no case column -> no ablation table and no claims table.
    assert report.H_ABLATION not in text and report.H_CLAIMS not in text
    assert "Verdict rule" not in text
    # Rule: the axis plot exists and is linked; curves of the best trials too.
    links = _image_links(text)
    expected = {
        "plots/axis_objective.png",
        "plots/loss_vs_epoch.png",
        "plots/loss_vs_seconds.png",
        "plots/grad_norms.png",
        "plots/importance.png",
    }
    assert expected <= set(links)
    for link in links:
        assert (plain / link).read_bytes()[:4] == b"\x89PNG"
    # Rule: best lr 0.098 in the top 10% of [1e-4, 0.1] (log scale) -> an edge warning.
    assert "train.lr: best 0.098 is near the upper edge of [0.0001, 0.1] (log scale)" in text
    # Rule: the share of diverged trials is stated (3 of 16 finished; the error is not finished).
    assert "3 of 16 finished trials (19%)" in text
    # Rule: without sgd the baseline is the median trial, and one run per config says so.
    assert "than the median trial" in text
    assert "one run only" in text
    assert "python -m tuner.search search_spaces/lr.yaml --name lr-search" in text
    # Rule: every report has the anytime plot (best objective so far against compute), drawn
    # from the tables alone, in time steps and in training seconds.
    assert report.H_ANYTIME in text
    for axis in ("timesteps", "seconds"):
        assert (plain / "plots" / f"anytime_{axis}.png").read_bytes()[:4] == b"\x89PNG"
    # Rule: the study table counts where trials ran (node / device).
    assert "10.0.0.1 / cpu: 12; 10.0.0.1 / cuda:0 (NVIDIA H200): 4" in text


def test_plain_search_importance_from_trials_csv(plain: Path) -> None:
    text = (plain / "report.md").read_text()
    # Rule: importance comes from trials.csv (this study has no optuna.db), names its evaluator
    # (fANOVA: scikit-learn is installed with the test extra) and links its plot.
    assert not (plain / "optuna.db").exists()
    section = text.split(report.H_IMPORTANCE)[1]
    assert "Evaluator: **fANOVA**" in section
    assert "| train.lr |" in section and "| train.optimizer |" in section
    assert "plots/importance.png" in section
    # Rule: the wrong wording is gone: no "fANOVA" claim for an optuna.db that was never read.
    assert "optuna.db" not in section


def _lever_study(path: Path) -> Path:
    """A case grid of optimizer x clip mode x 3 seeds whose loss depends on the optimizer only
    (adam 0.1, sgd 1.0, rmsprop 0.5, 1% seed noise); one adam run diverged."""
    trials, cases = [], []
    levels = {"sgd": 1.0, "rmsprop": 0.5, "adam": 0.1}
    for opt, level in levels.items():
        for clip in ("none", "norm"):
            name = f"{opt}-{clip}"
            cases.append({"name": name, "train.optimizer": opt, "train.clip.mode": clip})
            for seed in SEEDS:
                div = name == "adam-norm" and seed == 2
                trials.append(
                    {
                        "trial_id": f"{name}_s{seed}",
                        "status": "diverged" if div else "completed",
                        "case": name,
                        "train.seed": seed,
                        "objective": math.inf if div else level * (1 + 0.01 * seed),
                    }
                )
    meta = {
        "name": path.name,
        "space": {"case": {"grid": cases}, "train.seed": {"grid": [0, 1, 2]}},
        "search": {"algorithm": "grid", "metric": "train_loss"},
    }
    return write_study(path, trials, [], meta)


def test_importance_of_a_case_grid_is_over_its_levers(tmp_path: Path) -> None:
    study = report.load_study(_lever_study(tmp_path / "levers"))
    imp, why = report.parameter_importance(study)
    # Rule: a case grid is described by the keys its cases set (not by case names, not seeds),
    # and the lever that drives the loss (the optimizer) comes out on top.
    assert imp is not None and imp.evaluator == "fANOVA" and "fANOVA" in why
    assert set(imp.values.index) == {"train.optimizer", "train.clip.mode"}
    assert imp.values.idxmax() == "train.optimizer"
    assert imp.values["train.optimizer"] > 0.8
    # Rule: the diverged trial counts, with the worst finite objective (not dropped, not inf).
    assert imp.n_trials == 18


def test_importance_without_scikit_learn_uses_ped_anova(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rule: no scikit-learn -> PED-ANOVA, and the report says so.
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    path = plain_study(tmp_path / "ped", n=16)
    imp, why = report.parameter_importance(report.load_study(path))
    assert imp is not None and imp.evaluator == "PED-ANOVA" and "PED-ANOVA" in why
    assert "train.lr" in imp.values.index
    text = report.make_report(path).read_text()
    assert "Evaluator: **PED-ANOVA**" in text.split(report.H_IMPORTANCE)[1]


def test_importance_skipped_with_few_trials_or_no_space(tmp_path: Path) -> None:
    # Rule: fewer than 10 finished trials -> skipped gracefully, with the count.
    few = report.load_study(plain_study(tmp_path / "few", n=8))
    importance, why = report.parameter_importance(few)
    assert importance is None and "Only 8 finished trials (10 needed)" in why
    # Rule: no space in study.yaml -> no distributions -> skipped, with the reason.
    meta = yaml.safe_load((tmp_path / "few" / "study.yaml").read_text())
    del meta["space"]
    (tmp_path / "few" / "study.yaml").write_text(yaml.safe_dump(meta))
    importance, why = report.parameter_importance(report.load_study(tmp_path / "few"))
    assert importance is None and "No searched hyperparameters" in why


def test_unreadable_space_is_a_note(tmp_path: Path) -> None:
    # Rule: a study.yaml whose space the space loader refuses (a key the format does not have)
    # is reported as a note; the report is still written, without ranges or importance.
    path = plain_study(tmp_path / "odd", n=12)
    meta = yaml.safe_load((path / "study.yaml").read_text())
    meta["space"]["train.lr"] = {"lower": 1e-4, "upper": 0.1}
    (path / "study.yaml").write_text(yaml.safe_dump(meta))
    text = report.make_report(path).read_text()
    assert "the space in study.yaml cannot be read" in text
    assert "near the upper edge" not in text


def _bare_study(path: Path) -> Path:
    """A folder with only a two-row trials.csv."""
    path.mkdir()
    pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "status": ["completed", "diverged"],
            "objective": [0.5, math.inf],
            "train.lr": [0.01, 0.1],
        }
    ).to_csv(path / "trials.csv", index=False)
    return path


def test_report_tolerates_missing_optional_files(tmp_path: Path) -> None:
    # Rule: only trials.csv is required; no epochs.csv / study.yaml -> notes, not a crash.
    text = report.make_report(_bare_study(tmp_path / "bare")).read_text()
    assert "epochs.csv is missing" in text and "study.yaml is missing" in text
    assert "No epochs recorded" in text
    assert "1 of 2 finished trials (50%)" in text


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_missing_folder_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = report.main([str(tmp_path / "nope")])
    err = capsys.readouterr().err
    # Rule: exit 2, exactly one line on stderr, no traceback.
    assert rc == 2
    assert err.count("\n") == 1 and "not found" in err and "Traceback" not in err


def test_cli_missing_trials_csv_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trials.csv" in err


def test_cli_unwritable_out_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Rule: --out where nothing can be written (here: below a regular file) -> one line, exit 2,
    # no traceback, and the study folder is left as it was.
    path = _bare_study(tmp_path / "cli")
    (tmp_path / "a-file").write_text("x")
    before = sorted(p.name for p in path.iterdir())
    assert report.main([str(path), "--out", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the report" in err and "Traceback" not in err
    assert sorted(p.name for p in path.iterdir()) == before


def test_cli_table_without_objective_names_the_missing_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rule: a trials.csv with three finished trials but no column to rank them by is an error
    # naming that column (exit 2), never a report saying "no trial has finished".
    path = tmp_path / "cols"
    path.mkdir()
    pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3}).to_csv(
        path / "trials.csv", index=False
    )
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing the column objective" in err
    assert "trial_id, status" in err
    assert not (path / "report.md").exists()


def test_cli_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bare_study(tmp_path / "cli")
    assert report.main([str(path), "--out", str(tmp_path / "o")]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "o" / "report.md"
    assert (tmp_path / "o" / "report.md").is_file()
