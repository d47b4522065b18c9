"""The lazily imported public names all resolve, and saved configs of every method can load."""

import importlib

import deltaspace
from deltaspace.deltas.registry import registered_methods


def test_every_public_name_resolves_to_its_definition() -> None:
    configs = {cls.__name__: cls for cls in registered_methods().values()}
    assert set(deltaspace.__all__) == {*deltaspace._EXPORTS, *configs, "__version__"}
    for name, module in deltaspace._EXPORTS.items():
        # The very object its module defines, not a stale copy or another module's namesake.
        assert getattr(deltaspace, name) is getattr(importlib.import_module(module), name), name
    for name, cls in configs.items():
        assert getattr(deltaspace, name) is cls, name
    # The shipped methods' configs are among them (the registry is filled by importing the package).
    assert {"CoeffTuningConfig", "PeftDeltaConfig", "AdapterConfig", "PromptTuningConfig"} <= set(configs)


def test_unknown_attribute_is_a_clear_error() -> None:
    try:
        deltaspace.get_peft_model  # noqa: B018
    except AttributeError as error:
        assert "get_peft_model" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_registers_every_method() -> None:
    deltaspace.get_delta_model  # noqa: B018 -- triggers the lazy import
    assert {"coeff", "peft", "adapter", "bitfit", "prompt", "prefix", "full"} <= set(registered_methods())
