"""The training core: config, data, model, clipping, schedule and the chunked training loop.

Pure PyTorch. Nothing here imports Ray, Optuna or matplotlib (a test enforces it), so `fit` runs
the same in a notebook, in `python -m tuner.train` and inside a Ray Tune trial.
"""
