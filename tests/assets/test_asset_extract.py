import pytest
from asset_fixtures import WHEEL_FILES, make_sdist, make_wheel

from deltaspace.assets.extract import extract_members


@pytest.mark.parametrize("maker,suffix", [(make_wheel, ".whl"), (make_sdist, ".tar.gz")])
def test_extracts_only_the_named_members(tmp_path, maker, suffix):
    archive = maker(tmp_path / f"fakepkg-1.0{suffix}", WHEEL_FILES)
    out = tmp_path / "out"
    written = extract_members(archive, ["fakepkg/data/*"], out)
    assert sorted(written) == [
        "fakepkg-1.0.dist-info/METADATA",
        "fakepkg/data/a.txt",
        "fakepkg/data/sub/b.txt",
    ]
    assert (out / "fakepkg/data/sub/b.txt").read_bytes() == b"beta"
    assert not (out / "fakepkg/code.py").exists()


def test_exact_member_and_missing_member(tmp_path):
    archive = make_wheel(tmp_path / "fakepkg-1.0.whl", WHEEL_FILES)
    extract_members(archive, ["fakepkg/data/a.txt"], tmp_path / "ok", optional=())
    assert [p.name for p in (tmp_path / "ok").rglob("*") if p.is_file()] == ["a.txt"]
    with pytest.raises(ValueError, match=r"no member matching fakepkg/missing\.txt"):
        extract_members(archive, ["fakepkg/data/a.txt", "fakepkg/missing.txt"], tmp_path / "bad")


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "fakepkg/../../evil.txt"])
def test_unsafe_member_paths_are_refused(tmp_path, name):
    archive = make_sdist(tmp_path / "evil-1.0.tar.gz", {name: b"x"})
    with pytest.raises(ValueError, match="unsafe archive member"):
        extract_members(archive, ["*"], tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_unknown_archive_type(tmp_path):
    path = tmp_path / "pkg.rar"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported archive type"):
        extract_members(path, ["*"], tmp_path / "out")
