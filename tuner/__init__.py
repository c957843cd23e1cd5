"""lstm-tuner: find how to train LSTMs on long sequences fast (optimizer, clipping, TBPTT schedule).

`tuner.run_search(...)`, `tuner.load_study(...)`, `tuner.Study`, `tuner.SearchOptions` and
`tuner.ConfigError` come from `tuner.api`, imported on first use: `import tuner` (and the
training core, `tuner.core`) never imports Ray or Optuna.
"""

__version__ = "0.1.0"

_API = ("run_search", "load_study", "Study", "SearchOptions", "ConfigError")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from tuner import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
