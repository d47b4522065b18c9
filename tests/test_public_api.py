"""The lazily imported public names all resolve, and saved configs of every method can load."""

import deltaspace


def test_every_public_name_resolves() -> None:
    for name in deltaspace.__all__:
        assert getattr(deltaspace, name) is not None, name


def test_unknown_attribute_is_a_clear_error() -> None:
    try:
        deltaspace.get_peft_model  # noqa: B018
    except AttributeError as error:
        assert "get_peft_model" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_registers_every_method() -> None:
    from deltaspace.deltas.base import registered_methods

    deltaspace.get_delta_model  # noqa: B018 -- triggers the lazy import
    assert {"coeff", "peft", "adapter", "bitfit", "prompt", "prefix", "full"} <= set(registered_methods())
