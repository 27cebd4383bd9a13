"""deltalab: a reproducible pipeline for studying the quality delta of preference pairs."""

__version__ = "0.1.0"
