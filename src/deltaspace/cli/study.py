"""`deltaspace study [CONFIG]`: the whole unified-subspace pipeline, resumable."""

from __future__ import annotations

from typing import Annotated

import typer

from deltaspace.cli.app import app
from deltaspace.errors import UserInputError


@app.command()
def study(
    config: Annotated[
        str | None,
        typer.Argument(
            help="A study YAML, or a shipped one: default (the demo), full_suite, full_suite_loo (suite v2), full_suite_v1, full_suite_loo_v1 (suite v1, needs BIG-bench). Default: default."
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Output directory (overrides the config).")
    ] = None,
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages to run: sweep,fit,optimise,landscape,report.")
    ] = "sweep,fit,optimise,landscape,report",
    fetch: Annotated[bool, typer.Option(help="Fetch missing models and tasks first.")] = True,
) -> None:
    """Run (or resume) the study: sweep -> subspace fit -> optimisation + transfer -> landscape -> report.md."""
    from rich.console import Console

    from deltaspace.study import STAGES, load_study_config, run_study

    try:
        study_config = load_study_config(config)
    except (FileNotFoundError, ValueError) as error:
        raise UserInputError(str(error)) from None
    if out is not None:
        study_config.out = out
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise UserInputError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    if fetch:
        from deltaspace.assets import MODEL_NAMES
        from deltaspace.assets import fetch as fetch_assets
        from deltaspace.tasks import SUITE

        if study_config.model in MODEL_NAMES or set(study_config.tasks) & set(SUITE):
            fetch_assets()  # idempotent: nothing to do (and no network) once the cache is complete
    report = run_study(study_config, stages=chosen)  # expected failures: one line (deltaspace.cli.app)
    Console().print(f"[bold green]report:[/] {report}")
