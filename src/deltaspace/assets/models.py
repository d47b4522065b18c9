"""``load_model``: a packaged model, a local checkpoint directory, or a Hub name -> (model, tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deltaspace.assets.cache import cache_dir, is_complete, missing_asset
from deltaspace.assets.registry import PACKAGED_MODELS
from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError

MODEL_KINDS = ("encoder", "sequence-classification", "causal-lm")
MODEL_NAMES = tuple(PACKAGED_MODELS)


def resolve_model_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The local directory of packaged model ``name``; raises ``MissingAssetError`` when not fetched."""
    model = PACKAGED_MODELS[name]
    root = cache_dir(cache)
    directory = model.directory(root)
    if not (is_complete(model.published_dir(root)) and directory.is_dir()):
        hint = f"deltaspace fetch --with {model.extra}" if model.extra else "deltaspace fetch"
        raise missing_asset(f"model {name!r}", root, hint)
    return directory


def check_model_dir(directory: Path) -> None:
    """Raise unless ``directory`` looks like a transformers checkpoint (it has a ``config.json``)."""
    if not (directory / "config.json").is_file():
        what = "is empty" if not any(directory.iterdir()) else "has no config.json"
        raise UserInputError(
            f"model directory {str(directory)!r} {what}; pass a checkpoint directory written by "
            f"save_pretrained (config.json, weights, tokenizer) or one of {', '.join(MODEL_NAMES)}"
        )


def _auto_class(kind: str):
    import transformers

    return {
        "encoder": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM,
    }[kind]


def load_model(
    name: str | os.PathLike = "minilm-l6",
    *,
    num_labels: int | None = None,
    kind: str = "encoder",
    cache: str | os.PathLike | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load ``(model, tokenizer)``.

    ``name``: ``minilm-l6`` (default), ``minilm-l3``, ``smollm2-135m`` (fetched with ``deltaspace fetch``),
    a local transformers checkpoint directory, or a Hub name (downloads only where the Hub is reachable).
    ``kind``: ``encoder`` (``AutoModel``), ``sequence-classification`` (needs ``num_labels``; the head is
    newly initialised) or ``causal-lm``. Packaged models and local directories are read with
    ``local_files_only=True`` (the per-call form of ``HF_HUB_OFFLINE``), so they never touch the network.
    Extra keyword arguments go to ``from_pretrained`` (e.g. ``dtype``, ``attn_implementation``). A
    tokenizer without a pad token gets its EOS token as pad, so batches can be padded.
    """
    if kind not in MODEL_KINDS:
        raise UserInputError(f"unknown model kind {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    if kind == "sequence-classification":
        if num_labels is None or int(num_labels) < 1:
            raise ValueError("kind='sequence-classification' needs num_labels (the number of classes)")
        from_pretrained_kwargs["num_labels"] = int(num_labels)
    elif num_labels is not None:
        raise ValueError(f"num_labels only applies to kind='sequence-classification', not {kind!r}")

    name_str = os.fspath(name)
    if name_str in PACKAGED_MODELS:
        source, local = resolve_model_dir(name_str, cache), True
        for option, value in PACKAGED_MODELS[name_str].encoder_options if kind == "encoder" else ():
            from_pretrained_kwargs.setdefault(option, value)
    elif Path(name_str).expanduser().is_dir():
        source, local = Path(name_str).expanduser(), True
        check_model_dir(source)
    elif Path(name_str).expanduser().exists() or name_str.startswith((".", "/", "~")):
        raise MissingFileError(f"model directory {name_str!r} does not exist (or is not a directory)")
    else:
        source, local = name_str, False

    from transformers import AutoTokenizer

    if local:
        from_pretrained_kwargs.setdefault("local_files_only", True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_tokenizer_kwargs(from_pretrained_kwargs))
        model = _quiet_load(_auto_class(kind), source, from_pretrained_kwargs)
    except OSError as error:
        if local:
            raise BrokenFileError(
                f"cannot load the model in {str(source)!r} ({str(error).splitlines()[0]}); check that "
                "directory holds a complete checkpoint saved with save_pretrained, or run `deltaspace fetch`"
            ) from error
        known = ", ".join(MODEL_NAMES)
        raise UserInputError(
            f"model {name_str!r} is not a packaged model ({known}), not a local directory, and could not be "
            f"loaded from the Hub ({str(error).splitlines()[0]})"
        ) from error
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _tokenizer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    keep = ("local_files_only", "revision", "token", "cache_dir", "trust_remote_code", "gguf_file")
    return {k: v for k, v in kwargs.items() if k in keep}


def _quiet_load(auto_class: Any, source: Any, kwargs: dict[str, Any]) -> Any:
    """``from_pretrained`` without its load report: a fresh task head is always reported MISSING, which is
    expected here and would otherwise be printed (with a progress bar) once per run of every sweep."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return auto_class.from_pretrained(source, **kwargs)
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
