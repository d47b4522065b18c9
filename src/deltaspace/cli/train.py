"""`deltaspace train | eval | sweep`: training runs, evaluating saved runs, and sweeps of runs.

Several processes: ``accelerate launch --multi_gpu --num_processes 2 $(which deltaspace) train ...`` (on CPU,
pass ``--cpu`` to ``train``: ``accelerate launch --cpu`` alone starts one process).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from deltaspace.cli.app import app
from deltaspace.errors import UserInputError


def parse_value(text: str) -> Any:
    """A command-line value: JSON first (1e-3, true, [1, 2], {"a": 1}), then YAML (``[query, value]``),
    else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is not None else text


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """['r=8', 'target_modules=[query,value]'] -> {'r': 8, 'target_modules': ['query', 'value']}."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{flag} takes key=value, got {item!r}")
        values[key.strip()] = parse_value(value.strip())
    return values


def _split_list(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma-separated lists both work: --task a --task b,c -> [a, b, c]."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _field_options() -> list[inspect.Parameter]:
    """One keyword-only option per ``TrainConfig`` field, named, typed and documented by the field itself.

    ``dict`` fields take repeatable ``key=value`` items, booleans ``--x/--no-x``; every default is None
    (unset), so a ``--config`` file or the dataclass default applies.
    """
    from deltaspace.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    parameters = []
    for field in dataclasses.fields(TrainConfig):
        flags = _flags(field)
        kind = _plain_type(hints[field.name])
        if kind is dict:
            annotation: Any = list[str] | None
        elif kind is bool:
            annotation, flags = bool | None, (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        else:
            annotation = kind | None
        option = typer.Option(*flags, help=field.metadata.get("help"))
        parameters.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[annotation, option],
            )
        )
    return parameters


def _flags(field: dataclasses.Field) -> tuple[str, ...]:
    return tuple(field.metadata.get("flags", ())) or (f"--{field.name.replace('_', '-')}",)


def _plain_type(hint: Any) -> type:
    """int for ``int | None``, dict for ``dict[str, float]``, ...: the type an option parses to."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    origin = typing.get_origin(hint)
    if origin is dict or hint is dict:
        return dict
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _plain_type(args[0])
    return hint


def train_command(
    *,
    config: Path | None = None,
    overwrite: bool = False,
    **options: Any,
) -> None:
    """Train one delta method on one task; writes config.json, metrics.jsonl, tb/, delta/, result.json.

    Rerunning the same command after a crash or a kill resumes from the run's last checkpoint."""
    from accelerate import PartialState

    from deltaspace.train.config import TrainConfig
    from deltaspace.train.loop import train

    fields: dict[str, Any] = TrainConfig.from_json(config).to_dict() if config is not None else {}
    for name, value in options.items():
        if isinstance(value, list):  # a dict field's repeatable key=value items, on top of the file's
            field = TrainConfig.__dataclass_fields__[name]
            fields[name] = {**fields.get(name, {}), **parse_assignments(value, _flags(field)[0])}
        elif value is not None:
            fields[name] = value
    if "task" not in fields:
        raise UserInputError("--task is required (or --config with a task)")
    train_config = TrainConfig.from_dict(fields)
    result = train(train_config, overwrite=overwrite)
    if not PartialState().is_main_process:
        return
    _print_metrics(
        f"{result.task} / {result.method} / seed {result.seed}",
        {"validation": result.validation, "test": result.test},
        result.baselines,
    )
    stopped = ", then stopped early (no gain on validation)" if result.stopped_early else ""
    typer.echo(
        f"{result.steps} optimizer steps; the best validation score came at step {result.best_step}{stopped}"
    )
    typer.echo(f"run directory: {result.run_dir}")


train_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *_field_options(),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(help="A config.json (e.g. of an earlier run); options given here override it."),
            ],
        ),
        inspect.Parameter(
            "overwrite",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option(
                    help="Replace the run in --out; the old one is kept until the new one has finished."
                ),
            ],
        ),
    ]
)
app.command("train")(train_command)


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `deltaspace train`.")],
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    batch_size: Annotated[int | None, typer.Option()] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Score a saved run on a split of its task (rebuilds base + head, loads the delta)."""
    from deltaspace.train.evaluate import evaluate_run

    metrics = evaluate_run(run_dir, split, batch_size=batch_size)
    if json_output:
        typer.echo(json.dumps(metrics))
    else:
        _print_metrics(f"{run_dir} ({split})", {split: metrics})


@app.command("sweep")
def sweep_command(
    config: Annotated[
        Path | None, typer.Option(help="Sweep config (YAML/JSON); the options below override it.")
    ] = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", "--tasks", help="Tasks (repeat or comma-separate).")
    ] = None,
    method: Annotated[list[str] | None, typer.Option("--method", "--methods", help="Method presets.")] = None,
    seed: Annotated[list[str] | None, typer.Option("--seed", "--seeds", help="Seeds, e.g. 0,1,2.")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Sweep directory.")] = None,
    model: Annotated[str | None, typer.Option(help="Model for every run.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="TrainConfig field for every run, key=value (repeatable)."),
    ] = None,
    shard: Annotated[str, typer.Option(help="i/n: run only shard i (from 0) of n.")] = "0/1",
    isolate: Annotated[bool, typer.Option(help="Each run in its own Python process.")] = False,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed run.")] = False,
) -> None:
    """Run tasks x methods x seeds into <out>/<task>/<method>/seed<k>/ (resumable, shardable)."""
    from deltaspace.train.sweep import SweepConfig, is_main_process, parse_shard, run_sweep

    shard_spec = parse_shard(shard)
    seeds = _parse_seeds(seed)
    train_fields = parse_assignments(set_, "--set")
    if model is not None:
        train_fields["model"] = model
    overrides = {"out": out, "tasks": _split_list(task), "methods": _split_list(method), "seeds": seeds}
    if config is not None:
        sweep = SweepConfig.from_file(config, **overrides, train=train_fields or None)
    else:
        missing = [
            f"--{name[:-1] if name != 'out' else name}"
            for name in ("tasks", "methods", "out")
            if not overrides[name]
        ]
        if missing:
            raise UserInputError(f"give {', '.join(missing)} (or a --config sweep file)")
        sweep = SweepConfig(
            out=overrides["out"],
            tasks=overrides["tasks"],
            methods=overrides["methods"],
            seeds=seeds or [0],
            train=train_fields,
        )
    sweep.check()  # task files, methods and options, output paths: before the first run starts
    outcomes = run_sweep(sweep, shard=shard_spec, isolate=isolate, fail_fast=fail_fast)
    if is_main_process():
        _write_sweep_table(Path(sweep.out))
    if any(outcome.status == "failed" for outcome in outcomes):
        raise typer.Exit(code=1)


def _write_sweep_table(out: Path) -> None:
    """``<out>/results.md``: every finished run under ``out``, this shard's and the others'."""
    from deltaspace.report.results_table import write_results_table
    from deltaspace.train.result import collect_results

    frame = collect_results(out)
    if not frame.empty:
        write_results_table(frame, out / "results.md")


def _parse_seeds(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    parts = _split_list(values) or []
    try:
        return [int(value) for value in parts]
    except ValueError:
        raise UserInputError(f"--seed takes integers, e.g. --seed 0,1,2; got {', '.join(parts)}") from None


def _print_metrics(
    title: str, splits: dict[str, dict[str, float]], baselines: dict[str, Any] | None = None
) -> None:
    """The run's metrics per split; with ``baselines``, majority, the frozen probe (and the frozen LM's zero-shot
    scores) on the same split below."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("split", "accuracy", "macro_f1", "loss"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, metrics in splits.items():
        table.add_row(
            split, *(f"{metrics.get(name, float('nan')):.4f}" for name in ("accuracy", "macro_f1", "loss"))
        )
    rows = baseline_rows(baselines or {})
    if rows:
        table.add_section()
        for label, metrics in rows:
            table.add_row(
                label,
                *(f"{metrics[n]:.4f}" if n in metrics else "-" for n in ("accuracy", "macro_f1", "loss")),
            )
    Console().print(table)


def baseline_rows(baselines: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """``(label, test metrics)`` of the majority class, the frozen probe and (verbalizer head) the frozen LM's
    zero-shot label-word scores, for a result table."""
    rows = []
    if "majority" in baselines:
        rows.append((f"test, majority ({baselines['majority']['label']})", baselines["majority"]["test"]))
    if "probe" in baselines:
        rows.append((f"test, frozen probe (C={baselines['probe']['C']:g})", baselines["probe"]["test"]))
    if "zero_shot" in baselines:
        rows.append(("test, zero-shot (frozen LM)", baselines["zero_shot"]["test"]))
    return rows
