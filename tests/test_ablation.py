"""search_spaces/seed_ablation.yaml: the article's study as a grid of named settings x seeds."""

from __future__ import annotations

from pathlib import Path

from tests.test_space import tune_variants
from tuner.space import load_space, resolve

ABLATION = Path(__file__).resolve().parents[1] / "search_spaces" / "seed_ablation.yaml"
SOURCE = (100, 50, 10, 2, 1)
# case -> (optimizer, lr, clip mode, clip threshold, chunk schedule), as the article set them.
EXPECTED = {
    "sgd": ("sgd", 0.01, "none", None, (1,)),
    "rmsprop": ("rmsprop", 0.01, "none", None, (1,)),
    "adam": ("adam", 0.01, "none", None, (1,)),
    "rmsprop-clip": ("rmsprop", 0.01, "norm", 1.0, (1,)),
    "adam-clip": ("adam", 0.01, "norm", 1.0, (1,)),
    "sgd-schedule": ("sgd", 0.01, "none", None, SOURCE),
    "adam-clip-schedule": ("adam", 0.01, "norm", 1.0, SOURCE),
    "adam-adaptive-clip": ("adam", 0.01, "adaptive", 1.0, (1,)),
    "adagrad": ("adagrad", 0.01, "none", None, (1,)),
    "adadelta": ("adadelta", 1.0, "none", None, (1,)),
}


def _expand(overrides=()):
    spec = load_space(ABLATION, list(overrides))
    runs = [resolve(spec, sampled) for sampled in tune_variants(spec)]
    return spec, runs


def test_ablation_expands_to_settings_times_seeds():
    # Rule: the file is exactly the 10 listed settings x 3 seeds, each once, each as specified,
    # at the article's scale, with the same epoch budget for every setting.
    _, runs = _expand()
    assert len(runs) == 30
    seen = sorted((used["case"], cfg.train.seed) for cfg, used in runs)
    assert seen == sorted((case, seed) for case in EXPECTED for seed in (0, 1, 2))
    for cfg, used in runs:
        opt, lr, mode, threshold, chunks = EXPECTED[used["case"]]
        t = cfg.train
        assert (t.optimizer, t.lr, t.clip.mode, t.schedule.chunks) == (opt, lr, mode, chunks)
        if threshold is not None:
            assert t.clip.threshold == threshold
        assert t.schedule.patience == 20 and t.max_epochs == 300
        assert (cfg.data.n_series, cfg.data.length, cfg.data.window) == (17, 20000, 128)
        # 2 whole series held out: the article's 15 to train on, each at full length.
        assert (cfg.data.val_series, cfg.data.val_fraction) == (2, 0.0)


def test_ablation_reduced_scale_with_one_override_line():
    # Rule: the same file runs at laptop scale with overrides only; the settings do not change.
    _, runs = _expand(["data.length=4000", "data.n_series=10", "train.max_epochs=150"])
    assert len(runs) == 30
    assert {(c.data.length, c.data.n_series, c.train.max_epochs) for c, _ in runs} == {(4000, 10, 150)}
