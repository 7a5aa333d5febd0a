"""RegMix: choose a pre-training data mixture by regression over small proxy runs."""

__version__ = "0.1.0"
