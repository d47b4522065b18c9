"""`deltaspace tune` (the tuned sweep: learning-rate grid, then seeds at the chosen rate),
`deltaspace report results` (docs/results.md from it) and `deltaspace report coeff-adds` (its "What Coeff
adds" section from the two protocols of issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deltaspace.cli.app import app, command_line, report_app
from deltaspace.cli.train import _parse_seeds, _split_list, parse_assignments

DEFAULT_CONFIG = Path("configs") / "sweep_tuned.yaml"
RESULTS_FILE = Path("docs") / "results.md"


def _load(
    config: Path,
    out: str | None,
    task: list[str] | None,
    method: list[str] | None,
    combo: list[str] | None,
    seed: list[str] | None,
    set_: list[str] | None,
):
    from deltaspace.train.tuned import TunedSweepConfig

    train_fields = parse_assignments(set_, "--set")
    combos = _split_list(combo)
    if combo is not None and any(value.strip().lower() == "none" for value in combo):
        combos = []
    return TunedSweepConfig.from_file(
        config,
        out=out,
        tasks=_split_list(task),
        methods=_split_list(method),
        combos=combos,
        seeds=_parse_seeds(seed),
        train=train_fields or None,
    )


_CONFIG = typer.Option(help="Tuned sweep config (YAML/JSON); the options below override it.")
_TUNE_TASKS = typer.Option(
    "--task", "--tasks", help="The task to tune (suite name or data file); with --config: only these tasks."
)
_TUNE_METHODS = typer.Option(
    "--method",
    "--methods",
    help="Methods to tune (e.g. lora,coeff+lora); with --config: only these methods alone.",
)
_TUNE_CONFIG = typer.Option(
    help="A tuned sweep config (YAML/JSON: many tasks, combinations, shards); without it, tune --task for one task."
)
_OUT = typer.Option("--out", "-o", help="Sweep directory (overrides the config's out).")
_TASKS = typer.Option("--task", "--tasks", help="Only these tasks (repeat or comma-separate).")
_METHODS = typer.Option("--method", "--methods", help="Only these methods alone (combinations of them stay).")
_COMBOS = typer.Option("--combo", "--combos", help="Only these combinations ('none' for none).")
_SEEDS = typer.Option("--seed", "--seeds", help="Seeds, e.g. 0,1,2 (the first is the grid's).")
_SET = typer.Option("--set", help="TrainConfig field for every run, key=value (repeatable).")


@app.command("tune")
def tune_command(
    config: Annotated[Path | None, _TUNE_CONFIG] = None,
    phase: Annotated[
        str,
        typer.Option(
            help="grid, combo_lr, combo_option, seeds or all (each in turn; the combo phases run only with "
            "combo_tuning in the config)."
        ),
    ] = "all",
    shard: Annotated[str, typer.Option(help="i/n: run only shard i (from 0) of n of each phase.")] = "0/1",
    out: Annotated[str | None, _OUT] = None,
    task: Annotated[list[str] | None, _TUNE_TASKS] = None,
    method: Annotated[list[str] | None, _TUNE_METHODS] = None,
    combo: Annotated[list[str] | None, _COMBOS] = None,
    seed: Annotated[list[str] | None, _SEEDS] = None,
    set_: Annotated[list[str] | None, _SET] = None,
    isolate: Annotated[bool, typer.Option(help="Each run in its own Python process.")] = False,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed run.")] = False,
    plan: Annotated[bool, typer.Option(help="Print how many runs each phase has, and stop.")] = False,
    grid: Annotated[
        str, typer.Option(help="One task: multiples of each method's preset rate to try (comma-separated).")
    ] = "0.316,1,3.16",
    head: Annotated[
        str | None,
        typer.Option(help="One task: heads to try (comma-separated; default prototype,linear)."),
    ] = None,
) -> None:
    """Learning rates chosen on validation, then seeds at the chosen rate; resumable (rerun the same command).

    One task: `deltaspace tune --task mine.csv --method lora,coeff+lora`: each method's preset rate times
    --grid with each --head, the best on validation, seeds 0,1,2 there; a table beside majority and the
    frozen probe (<out>/results.md, default out runs/tune/<task>).

    Many tasks: `deltaspace tune --config configs/sweep_tuned_v2.yaml` (the tuned comparison; shardable with
    --shard i/n: run each phase on every shard before the next). Uses the GPU when there is one."""
    if config is None:
        _tune_one_task(task, method, combo, seed, out, set_, grid, head, phase, shard, plan)
        return
    if head is not None:
        from deltaspace.errors import UserInputError

        raise UserInputError("--head belongs to tune --task; a tuned sweep sets its head in the config")
    from deltaspace.train.sweep import is_main_process, parse_shard
    from deltaspace.train.tuned import PHASES, run_tuned

    if phase not in (*PHASES, "all"):
        from deltaspace.errors import UserInputError

        raise UserInputError(f"unknown phase {phase!r}; use {', '.join(PHASES)} or all")
    shard_spec = parse_shard(shard)
    sweep = _load(config, out, task, method, combo, seed, set_)
    if plan:
        typer.echo(_plan(sweep))
        return
    sweep.check()
    outcomes = run_tuned(sweep, phase, shard=shard_spec, isolate=isolate, fail_fast=fail_fast)
    if is_main_process() and any(o.status == "failed" for o in outcomes):
        raise typer.Exit(code=1)


def _plan(sweep) -> str:
    """How many runs each phase has (the combo_lr count is an upper bound: a rate listed twice runs once)."""
    from deltaspace.train.tuned import PHASES

    counts = {name: len(sweep.phase_runs(name)) for name in PHASES}
    probes = len(sweep.tasks) if sweep.probe is not None else 0
    phases = [f"grid phase {counts['grid']} runs (incl. {probes} probes)"]
    if sweep.combo_tuning is not None:
        phases += [
            f"combo_lr phase {counts['combo_lr']} runs (at most)",
            f"combo_option phase {counts['combo_option']} runs",
        ]
    phases.append(f"seeds phase {counts['seeds']} runs")
    return f"{sweep.out}: {', '.join(phases)}; {sum(counts.values())} in all"


def _tune_one_task(
    task: list[str] | None,
    method: list[str] | None,
    combo: list[str] | None,
    seed: list[str] | None,
    out: str | None,
    set_: list[str] | None,
    grid: str,
    head: str | None,
    phase: str,
    shard: str,
    plan: bool,
) -> None:
    from deltaspace.errors import UserInputError
    from deltaspace.train.tune_task import DEFAULT_SEEDS, tune

    tasks, methods = _split_list(task), _split_list(method)
    if not tasks or not methods:
        raise UserInputError(
            "give --task and --method (e.g. --task mine.csv --method lora,coeff+lora), or --config for a tuned sweep"
        )
    if len(tasks) > 1:
        raise UserInputError(f"tune --task takes one task (got {len(tasks)}); for several use --config")
    unused = [name for name, value in (("--combo", combo), ("--plan", plan)) if value]
    unused += [
        name
        for name, value, default in (("--phase", phase, "all"), ("--shard", shard, "0/1"))
        if value != default
    ]
    if unused:
        raise UserInputError(
            f"{', '.join(unused)} belong to tuned sweeps (--config); name combinations in --method"
        )
    try:
        multiples = [float(part) for part in _split_list([grid]) or []]
    except ValueError:
        raise UserInputError(f"--grid takes numbers, e.g. --grid 0.316,1,3.16; got {grid!r}") from None
    result = tune(
        tasks[0],
        methods,
        out=out,
        grid=multiples,
        seeds=_parse_seeds(seed) or list(DEFAULT_SEEDS),
        heads=_split_list([head]) if head is not None else None,
        train=parse_assignments(set_, "--set"),
    )
    typer.echo(f"wrote {result.out}/results.md and tune.json")
    if result.failed:
        raise typer.Exit(code=1)


@report_app.command("results")
def report_results_command(
    config: Annotated[Path, _CONFIG] = DEFAULT_CONFIG,
    output: Annotated[Path, typer.Option(help="The markdown file to write.")] = Path("docs") / "results.md",
    out: Annotated[str | None, _OUT] = None,
    task: Annotated[list[str] | None, _TASKS] = None,
    method: Annotated[list[str] | None, _METHODS] = None,
    combo: Annotated[list[str] | None, _COMBOS] = None,
    seed: Annotated[list[str] | None, _SEEDS] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
) -> None:
    """docs/results.md from the tuned sweep (run from the repository root: it reads
    bench/results/linear_probe.json for the full-data probe row). Keeps the hand-written reading."""
    from deltaspace.errors import UserInputError
    from deltaspace.report.tuned_report import write_tuned_report

    if resamples < 1:
        raise UserInputError(f"--resamples must be >= 1, got {resamples}")
    sweep = _load(config, out, task, method, combo, seed, None)
    command = command_line("results")
    write_tuned_report(sweep, output, command, resamples=resamples)
    typer.echo(f"wrote {output}")


def _sweep_arm(what: str) -> Any:
    return typer.Option(help=f"{what} (a sweep config); 'none' leaves it out.")


@report_app.command("coeff-adds")
def report_coeff_adds_command(
    tuned: Annotated[
        Path, typer.Option(help="Item 1's tuned sweep config (combo_tuning: ΔC's rate and dropout tuned).")
    ] = Path("configs") / "coeff_adds.yaml",
    paper: Annotated[
        Path, typer.Option(help="Item 2's sweep config (the paper's regime: one rate, long training).")
    ] = Path("configs") / "coeff_paper_regime.yaml",
    one_rate: Annotated[
        Path | None,
        _sweep_arm("A plain sweep at the tuned comparison's budget with one rate for every parameter"),
    ] = Path("configs") / "coeff_one_rate.yaml",
    own_rate: Annotated[
        Path | None, _sweep_arm("The one-rate sweep's other arm, ΔC at Coeff's own rate")
    ] = Path("configs") / "coeff_own_rate.yaml",
    output: Annotated[Path, typer.Option(help="The markdown file whose section is written.")] = RESULTS_FILE,
    resamples: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
) -> None:
    """The "What Coeff adds" section of docs/results.md: Coeff + X − X under each protocol, paired by seed,
    with bootstrap intervals and collapsed runs counted. Replaces that section only (the rest of the file and
    the section's hand-written reading are kept); a protocol without finished runs is said to be not run yet."""
    from deltaspace.errors import UserInputError
    from deltaspace.report.coeff_adds import (
        paper_protocol,
        sweep_protocol,
        tuned_protocol,
        write_coeff_adds,
    )
    from deltaspace.train.sweep import SweepConfig
    from deltaspace.train.tuned import TunedSweepConfig

    if resamples < 1:
        raise UserInputError(f"--resamples must be >= 1, got {resamples}")
    protocols = [
        tuned_protocol(TunedSweepConfig.from_file(tuned), tuned),
        paper_protocol(SweepConfig.from_file(paper), paper),
    ]
    for name, path in (("one_rate", one_rate), ("own_rate", own_rate)):
        if path is not None and str(path) != "none":
            protocols.append(sweep_protocol(name, SweepConfig.from_file(path), path))
    command = command_line("coeff-adds")
    write_coeff_adds(protocols, output, command, resamples=resamples)
    typer.echo(f"wrote the section 'What Coeff adds' of {output}")


@report_app.command("coeff-mixing")
def report_coeff_mixing_command(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders (or delta folders) with Coeff-Tuning in their delta.")
    ],
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the first run's C − I per layer as heat maps (PNG).")
    ] = None,
    per_run: Annotated[bool, typer.Option(help="One row per run (means over its layers).")] = False,
) -> None:
    """What Coeff-Tuning learned, per run and layer: how far C = I + Δ moved from the identity, how much of
    each head's own map it keeps, the share of a head's new map taken from other heads, the largest mix."""
    from rich.console import Console
    from rich.table import Table

    from deltaspace.report.coeff_mixing import (
        SUMMARY_HEADER,
        TABLE_HEADER,
        mixing_summary,
        mixing_table,
        plot_mixing,
    )

    table = Table(*(SUMMARY_HEADER if per_run else TABLE_HEADER))
    for row in mixing_summary(runs) if per_run else mixing_table(runs):
        table.add_row(*row)
    console = Console()
    # nine columns: unwrapped when the output goes to a file or a pipe, where 80 columns would fold every cell
    Console(width=None if console.is_terminal else 200).print(table)
    if plot is not None:
        typer.echo(f"wrote {plot_mixing(runs[0], plot)}")
