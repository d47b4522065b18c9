"""Checks that run before any model is loaded or any run directory is created: method strings and their
options (names, types, ranges), model names / paths. Each failure is one :class:`UserInputError` line."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from deltaspace.errors import MissingFileError, UserInputError

# Not a delta: no method attached, only the task head trains (the head-only baseline of a sweep).
HEAD_ONLY = "head"


def preset_config_classes() -> dict[str, type]:
    """The config class each method preset builds (from the registry each DET's file fills)."""
    from deltaspace.deltas import registry

    return {name: preset.config_class for name, preset in registry.presets().items()}


def check_method(method: str, options: dict[str, Any] | None = None) -> None:
    """Raise :class:`UserInputError` for an unknown preset, a repeated one, an option no component has,
    or an option value of the wrong type or out of range. Mirrors ``resolve_method``'s option routing."""
    options = options or {}
    if not isinstance(method, str) or not method.strip():
        raise UserInputError(f"method must be a preset such as coeff+lora, got {method!r}")
    if method.strip() == HEAD_ONLY:
        if options:
            raise UserInputError(
                f"method {HEAD_ONLY!r} (train the head only) takes no options, got {options}"
            )
        return
    if HEAD_ONLY in [part.strip() for part in method.split("+")]:
        raise UserInputError(
            f"method {HEAD_ONLY!r} trains the head alone and does not combine; drop it from {method!r}"
        )
    parts = [part.strip() for part in method.split("+")]
    classes = preset_config_classes()
    unknown = [part for part in parts if part not in classes]
    if unknown:
        raise UserInputError(
            f"unknown delta method(s) {unknown} in {method!r}; available: {', '.join(classes)} "
            "(combine with '+', e.g. coeff+lora)"
        )
    if len(set(parts)) != len(parts):
        raise UserInputError(f"delta method {method!r} names a method twice; list each once")
    for key, value in options.items():
        scope, sep, option = str(key).replace("__", ".", 1).partition(".")
        if sep:
            if scope not in parts:
                raise UserInputError(
                    f"method option {key!r} names method {scope!r}, which is not in {method!r}"
                )
            owners = [scope]
        else:
            option = str(key)
            owners = [part for part in parts if option in _init_fields(classes[part])]
            if not owners:
                raise UserInputError(
                    f"method option {key!r} matches no option of {method!r}; options: "
                    f"{', '.join(sorted({f for part in parts for f in _init_fields(classes[part])}))}"
                )
        for owner in owners:
            _check_option(owner, classes[owner], option, value, key)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {field.name: field for field in dataclasses.fields(cls) if field.init}


def _check_option(owner: str, cls: type, option: str, value: Any, key: str) -> None:
    fields = _init_fields(cls)
    if option not in fields:
        raise UserInputError(
            f"method option {key!r}: {owner} has no option {option!r}; its options: {', '.join(sorted(fields))}"
        )
    try:
        annotation = typing.get_type_hints(cls).get(option, Any)
    except Exception:  # unresolvable annotations: leave the check to the config itself
        annotation = Any
    default = _default(fields[option])
    if not _matches(value, annotation):
        example = f" (default {default!r})" if default is not None else ""
        raise UserInputError(
            f"method option {key}={value!r}: {owner}'s {option} must be {_describe(annotation)}{example}"
        )
    positive_default = isinstance(default, int) and not isinstance(default, bool) and default >= 1
    if positive_default and isinstance(value, int) and value < 1:
        raise UserInputError(f"method option {key}={value!r}: {owner}'s {option} must be >= 1")
    if "dropout" in option and isinstance(value, (int, float)) and not 0 <= value < 1:
        raise UserInputError(f"method option {key}={value!r}: {owner}'s {option} must be in [0, 1)")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return None


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, set, typing.Sequence) or annotation in (list, tuple, set):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args and args[-1] is not Ellipsis else (args[0] if args else Any)
        return all(_matches(item, inner) for item in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return not isinstance(annotation, type) or isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    if annotation in names:
        return names[annotation]
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {plural.get(args[0], _describe(args[0]))}" if args else "a list"
    return getattr(annotation, "__name__", str(annotation))


def check_model(name: str) -> None:
    """Raise unless ``name`` is a fetched packaged model, a checkpoint directory with a ``config.json``,
    or (not checked offline) a Hub name."""
    from deltaspace.assets.models import MODEL_NAMES, check_model_dir, resolve_model_dir

    if name in MODEL_NAMES:
        resolve_model_dir(name)
        return
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        check_model_dir(path)
    elif path.exists() or name.startswith((".", "/", "~")):
        raise MissingFileError(
            f"model directory {name!r} does not exist (or is not a directory); pass one of "
            f"{', '.join(MODEL_NAMES)} or a checkpoint directory saved with save_pretrained"
        )
