import hashlib
import io
import urllib.error
from dataclasses import replace

import pytest
from asset_fixtures import WHEEL_FILES, make_sdist, make_wheel, spec_for

from deltaspace.assets import download
from deltaspace.assets.download import ChecksumError, DownloadError, download_package
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
    with pytest.raises(DownloadError, match=r"No matching distribution.*--packages-dir") as error:
        download_package(spec, tmp_path / "dl")
    assert error.value.answer == "No matching distribution found for fakepkg==1.0"


class FakeResponse:
    """What urllib.request.urlopen returns, serving ``data`` and announcing ``length`` bytes."""

    def __init__(self, data: bytes, length: int | None = None) -> None:
        self._stream = io.BytesIO(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def npm_tarball(tmp_path):
    tarball = make_sdist(tmp_path / "datasets-toy-0.2.3.tgz", {"package/data/a.json": b"[1, 2]"})
    url = "https://registry.npmjs.org/@stdlib/datasets-toy/-/datasets-toy-0.2.3.tgz"
    return spec_for(tarball, ("package/data/*.json",), name="@stdlib/datasets-toy", version="0.2.3", url=url)


def test_npm_tarball_is_streamed_from_its_url(tmp_path, npm_tarball, monkeypatch):
    data = (tmp_path / npm_tarball.filename).read_bytes()
    opened = []

    def urlopen(url, timeout):
        opened.append(url)
        return FakeResponse(data)

    monkeypatch.setattr(download.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(
        download, "_pip_download", lambda *a: pytest.fail("npm tarballs never go through pip")
    )
    monkeypatch.setattr(download, "_CHUNK", 64)
    events = []
    path = download_package(npm_tarball, tmp_path / "dl", progress=lambda s, d, t: events.append((s, d, t)))
    assert opened == [npm_tarball.url] and path.read_bytes() == data
    downloads = [e for e in events if e[0] == "download"]
    assert len(downloads) > 1 and downloads[-1] == ("download", len(data), len(data))
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [npm_tarball.filename]


def test_npm_http_error_is_the_answer_and_there_is_no_pip_fallback(tmp_path, npm_tarball, monkeypatch):
    def urlopen(url, timeout):
        raise urllib.error.HTTPError(url, 403, "Forbidden", {}, None)

    monkeypatch.setattr(download.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(
        download, "_pip_download", lambda *a: pytest.fail("npm tarballs never go through pip")
    )
    with pytest.raises(DownloadError) as error:
        download_package(npm_tarball, tmp_path / "dl")
    assert error.value.answer == f"{npm_tarball.url} answered HTTP 403 Forbidden"
    assert "--packages-dir" in str(error.value)


def test_a_truncated_url_download_is_never_taken_for_the_file(tmp_path, npm_tarball, monkeypatch):
    data = (tmp_path / npm_tarball.filename).read_bytes()
    # The server announces every byte and then closes early: urllib returns b"" instead of raising.
    monkeypatch.setattr(
        download.urllib.request, "urlopen", lambda url, timeout: FakeResponse(data[:10], len(data))
    )
    with pytest.raises(DownloadError, match=rf"sent 10 of {len(data)} bytes"):
        download_package(npm_tarball, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []  # neither the file nor its .part


def test_a_corrupt_url_download_is_refused_by_its_checksum(tmp_path, npm_tarball, monkeypatch):
    data = (tmp_path / npm_tarball.filename).read_bytes()
    corrupt = bytes([data[0] ^ 1]) + data[1:]
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: FakeResponse(corrupt))
    with pytest.raises(ChecksumError):
        download_package(npm_tarball, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_an_npm_tarball_in_packages_dir_is_used(tmp_path, npm_tarball, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert (
        download_package(npm_tarball, tmp_path / "dl", sources=[tmp_path]) == tmp_path / npm_tarball.filename
    )


@pytest.mark.parametrize(
    "stderr,answer",
    [
        (
            "ERROR: Could not find a version that satisfies the requirement bigbench==1.0.0 (from versions: "
            "0.0.1)\nERROR: No matching distribution found for bigbench==1.0.0\n",
            "Could not find a version that satisfies the requirement bigbench==1.0.0 (from versions: 0.0.1)",
        ),
        (
            "WARNING: x\nERROR: HTTP error 404 while getting https://x/y.whl\n",
            "HTTP error 404 while getting https://x/y.whl",
        ),
        ("something odd\n\n", "something odd"),
        (
            "ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)\n",
            "Could not find a version that satisfies the requirement x==1 (from versions: none) (the index "
            "listed no file: it is unreachable or lacks the package)",
        ),
        ("", "pip exit status 2"),
        (
            "WARNING: Retrying (Retry(total=4, connect=None)) after connection broken\n"
            "ERROR: No matching distribution found for x==1\n",
            "No matching distribution found for x==1 (after connection retries: the index may be unreachable)",
        ),
    ],
)
def test_pip_answer_is_the_line_that_says_why(stderr, answer):
    assert download.pip_answer(stderr, 2) == answer
