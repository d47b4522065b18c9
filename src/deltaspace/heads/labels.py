"""How a task's label names read as text: what the prototype head embeds and the verbalizer head scores."""

from __future__ import annotations


def label_text(name: object) -> str:
    """'not_entailment' -> 'not entailment': label names are identifiers, the models read words."""
    return str(name).replace("_", " ").strip()
