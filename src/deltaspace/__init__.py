"""deltaspace: delta tuning (PEFT) for transformers."""

__version__ = "0.1.0"
