"""A study's report: ``report.md`` + ``plots/*.png`` from the files in ``results/<study>/``.

    python -m tuner.report results/NAME [--out DIR]

It reads only the files a study leaves (``trials.csv``, ``epochs.csv``, ``study.yaml``), never
Ray objects, so anyone can make it again from a copied results folder. It follows the Deep
Learning Tuning Playbook: an actionable summary first, the training curves of the best
settings, for ablations the article's claims checked against the numbers, and for every search
the axis plots, edge-of-range warnings, diverged trials, gradient norms, parameter importance
and the command that reproduces the study.

The modules, in the order data flows through them:

* `load`: read the folder (``StudyFiles``); the searched keys' distributions via the space loader.
* `measures`: generic measures of curves and trial tables (spikes, loss at E epochs, settings).
* `ranges`: searched ranges and edge-of-range warnings.
* `heldout`: the baselines of study.yaml, gains over them, the data's constants, overfitting.
* `yardsticks`: the 2019 article's cases and every run's numbers on one loss column.
* `claims`: the article's claims, the verdict rule and the two-column claims table.
* `importance`: parameter importance from trials.csv (fANOVA or PED-ANOVA).
* `plots`, `axes`: figures; `text`, `markdown`: tables and text sections.
* `build`: `make_report`; `cli`: the command line.
"""

from tuner.report.build import make_report
from tuner.report.cli import main
from tuner.report.importance import parameter_importance
from tuner.report.load import ReportError, StudyFiles, load_study
from tuner.report.markdown import (
    H_ABLATION,
    H_AXIS,
    H_BEST,
    H_CLAIMS,
    H_CURVES,
    H_DIVERGED,
    H_EDGES,
    H_GRAD,
    H_ANYTIME,
    H_IMPORTANCE,
    H_OVERFIT,
    H_SEARCH,
    H_STUDY,
    H_SUMMARY,
)

__all__ = [
    "H_ABLATION",
    "H_AXIS",
    "H_BEST",
    "H_CLAIMS",
    "H_CURVES",
    "H_DIVERGED",
    "H_EDGES",
    "H_GRAD",
    "H_ANYTIME",
    "H_IMPORTANCE",
    "H_OVERFIT",
    "H_SEARCH",
    "H_STUDY",
    "H_SUMMARY",
    "ReportError",
    "StudyFiles",
    "load_study",
    "main",
    "make_report",
    "parameter_importance",
]
