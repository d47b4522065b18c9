"""`deltaspace study [CONFIG]`: the whole unified-subspace pipeline, resumable; `deltaspace report studies`:
finished studies side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaspace.cli.app import app, command_line, report_app
from deltaspace.errors import UserInputError


@app.command()
def study(
    config: Annotated[
        str | None,
        typer.Argument(
            help="A study YAML, or a shipped one: default (the demo), full_suite, full_suite_loo, full_suite_fit / full_suite_fit_random (suite v2; the last two with stage 1 trained, with / without the descent directions), full_suite_fit_hull (full_suite_fit's stage 2 restricted to mixtures of θ0 and the source codes), full_suite_fit_agree (full_suite_fit with a stage-1 term that trains the DETs to read codes beyond the source mixtures alike), single_task (the paper's single-task setting, Tables 1-2), single_task_fit / single_task_fit_random (the same with the joint fit trained, with / without the descent directions), source_curve (optimisation and transfer against the number of source tasks k and d), source_curve_hull (the same with stage 2 kept inside the fitted region), full_suite_v1, full_suite_loo_v1 (suite v1, needs BIG-bench). Default: default."
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Output directory (overrides the config).")
    ] = None,
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages to run: sweep,fit,optimise,landscape,report.")
    ] = "sweep,fit,optimise,landscape,report",
    fetch: Annotated[bool, typer.Option(help="Fetch missing models and tasks first.")] = True,
    mixed_precision: Annotated[
        str | None,
        typer.Option(
            help="bf16: bfloat16 autocast in every stage (1.4-1.6x on CPUs with AVX512-BF16 or AMX, and on GPUs; "
            "slower on CPUs without). Default: the config's (no)."
        ),
    ] = None,
    plan: Annotated[
        bool,
        typer.Option(
            help="Print how many jobs each stage has left (runs, fits, stage-2 parts, ...), and stop."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes for each stage's independent jobs (runs, tasks, pairs). Default: one per core "
            "(up to 4) on a CPU machine, 1 with a GPU. 1 runs everything in this process."
        ),
    ] = None,
) -> None:
    """Run (or resume) the study: sweep -> subspace fit -> optimisation + transfer -> landscape -> report.md."""
    from rich.console import Console

    from deltaspace.study import STAGES, load_study_config, run_study
    from deltaspace.study.single_task import SingleTaskConfig, run_single_task
    from deltaspace.study.source_curve import SourceCurveConfig, run_source_curve

    try:
        study_config = load_study_config(config)
    except (FileNotFoundError, ValueError) as error:
        raise UserInputError(str(error)) from None
    if out is not None:
        study_config.out = out
    several = isinstance(study_config, SingleTaskConfig | SourceCurveConfig)  # one study per pair / point
    if mixed_precision is not None:
        if several:
            study_config.study["mixed_precision"] = mixed_precision
        else:
            study_config.mixed_precision = mixed_precision
        study_config.validate()
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise UserInputError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    if plan:
        from deltaspace.study import single_task, source_curve
        from deltaspace.study.pipeline import plan_studies

        own = {SingleTaskConfig: single_task.STAGES, SourceCurveConfig: source_curve.STAGES}
        runs = tuple(s for s in chosen if s in own.get(type(study_config), STAGES))
        left = plan_studies(study_config.studies() if several else [study_config], runs)
        for stage, count in left.items():
            Console().print(f"{stage:>10}: {count} job(s) left")
        return
    if fetch:
        from deltaspace.assets import MODEL_NAMES
        from deltaspace.assets import fetch as fetch_assets
        from deltaspace.tasks import SUITE

        studies = study_config.studies() if several else [study_config]
        if any(s.model in MODEL_NAMES or set(s.tasks) & set(SUITE) for s in studies):
            fetch_assets()  # idempotent: nothing to do (and no network) once the cache is complete
    # expected failures: one line (deltaspace.cli.app)
    if isinstance(study_config, SingleTaskConfig):
        report = run_single_task(study_config, stages=chosen, workers=workers)
    elif isinstance(study_config, SourceCurveConfig):
        report = run_source_curve(study_config, stages=chosen, workers=workers)
    else:
        report = run_study(study_config, stages=chosen, workers=workers)
    Console().print(f"[bold green]report:[/] {report}")


@report_app.command("studies")
def report_studies_command(
    studies: Annotated[
        list[Path], typer.Argument(help="Two or more finished study folders; the first is the base.")
    ],
    output: Annotated[Path | None, typer.Option(help="Write the markdown here (default: print it).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the figures as grouped bars (PNG).")] = None,
    dets: Annotated[
        str | None, typer.Option(help="Only these DETs, comma-separated (transfer: pairs among them).")
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
) -> None:
    """Finished studies side by side on the held-out tasks they share (own code, controls, one code for all,
    transfer), and each one's difference from the first, paired on the same test examples."""
    from deltaspace.study.compare import write_comparison

    if resamples < 1:
        raise UserInputError(f"--resamples must be >= 1, got {resamples}")
    text = write_comparison(
        studies,
        output,
        plot=plot,
        dets=[d.strip() for d in dets.split(",") if d.strip()] if dets else None,
        resamples=resamples,
        command=command_line("studies", [str(s) for s in studies]),
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {output}" + (f" and {plot}" if plot else ""))
