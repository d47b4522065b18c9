"""The example DET of docs/architecture.md, as its own file would be: registering it is all it takes to be a
preset, an export, a checked method and a member of the contract matrix (the same checks as test_zoo's)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from tests.deltas.contract import check_contract, check_theta0

import deltaspace
from deltaspace.deltas import registry
from deltaspace.deltas.presets import available_methods
from deltaspace.train.preflight import check_method

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _example_source() -> str:
    text = DOC.read_text()
    section = text[text.index("### Adding a DET") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/architecture.md: the 'Adding a DET' section must hold a ```python example"
    return match.group(1)


@pytest.fixture
def example_det(tmp_path, monkeypatch):
    """Import the example as the module file ``deltas/layernorm.py`` would be, into a scratch registry."""
    monkeypatch.setattr(registry, "_CONFIGS", dict(registry._CONFIGS))
    monkeypatch.setattr(registry, "_PRESETS", dict(registry._PRESETS))
    path = tmp_path / "example_det.py"
    path.write_text(_example_source())
    spec = importlib.util.spec_from_file_location("example_det", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "example_det", module)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_about_thirty_lines():
    code = [line for line in _example_source().splitlines() if line.strip()]
    assert len(code) <= 35


def test_registering_is_all_it_takes(example_det):
    assert "layernorm" in available_methods()
    assert deltaspace.__getattr__("LayerNormTuningConfig") is example_det.LayerNormTuningConfig
    assert "LayerNormTuningConfig" in deltaspace.__all__
    check_method("layernorm+lora", {"include_bias": False, "r": 2})
    with pytest.raises(ValueError, match="include_bias must be"):
        check_method("layernorm", {"include_bias": "yes"})


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_the_example_passes_the_contract(example_det, make_bert, make_llama, text_batch, tmp_path, arch):
    builders = {"bert": make_bert, "llama": make_llama}

    def base_for(name):
        return builders[name](attn_implementation="eager")

    check_contract(base_for, arch, "layernorm", text_batch, tmp_path)
    check_contract(base_for, arch, "layernorm+lora", text_batch, tmp_path / "combined")
    check_theta0(base_for, arch, "layernorm")
