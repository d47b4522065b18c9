"""Hooks into other libraries' training tools (Hugging Face's Trainer)."""
