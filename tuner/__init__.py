"""lstm-tuner: find how to train LSTMs on long sequences fast (optimizer, clipping, TBPTT schedule)."""

__version__ = "0.1.0"
