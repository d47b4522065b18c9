"""`deltaspace train | eval | sweep`: training runs, evaluating saved runs, and sweeps of runs.

Several processes: ``accelerate launch --multi_gpu --num_processes 2 $(which deltaspace) train ...`` (on CPU,
pass ``--cpu`` to ``train``: ``accelerate launch --cpu`` alone starts one process).
"""

from __future__ import annotations

import dataclasses
import json
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


@app.command("train")
def train_command(
    task: Annotated[str | None, typer.Option(help="Suite task name or data file (CSV/JSONL).")] = None,
    model: Annotated[
        str | None, typer.Option(help="minilm-l6, minilm-l3, smollm2-135m or a checkpoint directory.")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Delta method preset, e.g. coeff+lora, lora, adapter.")
    ] = None,
    method_option: Annotated[
        list[str] | None, typer.Option("--method-option", "-O", help="Preset option key=value (repeatable).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the delta init (θ0), the head, data order.")
    ] = None,
    data_seed: Annotated[int | None, typer.Option(help="Seed of the task's splits and subsampling.")] = None,
    head: Annotated[str | None, typer.Option(help="prototype (no trainable head) or linear.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Prototype head temperature τ.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch size (split across processes).")
    ] = None,
    eval_batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs.")] = None,
    warmup_ratio: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="linear, cosine or constant (after warmup).")] = None,
    max_grad_norm: Annotated[float | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit (default: the task's).")] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (default: every epoch).")
    ] = None,
    log_every: Annotated[int | None, typer.Option()] = None,
    early_stopping_patience: Annotated[
        int | None, typer.Option(help="Stop after N evaluations without gain.")
    ] = None,
    metric_for_best: Annotated[str | None, typer.Option(help="accuracy, macro_f1 or loss.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="no, bf16 or fp16 (GPU only).")] = None,
    max_train_examples: Annotated[int | None, typer.Option()] = None,
    max_eval_examples: Annotated[int | None, typer.Option()] = None,
    num_workers: Annotated[int | None, typer.Option()] = None,
    cpu: Annotated[bool | None, typer.Option("--cpu/--no-cpu", help="Force the CPU.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Write a resumable checkpoint every N optimizer steps.")
    ] = None,
    checkpoint_minutes: Annotated[
        float | None,
        typer.Option(
            help="Write a resumable checkpoint when M minutes have passed since the last (default 5)."
        ),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A config.json (e.g. of an earlier run); options given here override it."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace the run in --out; the old one is kept until the new one has finished."),
    ] = False,
) -> None:
    """Train one delta method on one task; writes config.json, metrics.jsonl, tb/, delta/, result.json.

    Rerunning the same command after a crash or a kill resumes from the run's last checkpoint."""
    options = dict(locals())
    from accelerate import PartialState

    from deltaspace.train.config import TrainConfig
    from deltaspace.train.loop import train

    names = {field.name for field in dataclasses.fields(TrainConfig)}
    given = {name: value for name, value in options.items() if name in names}
    fields: dict[str, Any] = TrainConfig.from_json(config).to_dict() if config is not None else {}
    fields.update({name: value for name, value in given.items() if value is not None})
    if method_option:
        fields["method_options"] = {
            **fields.get("method_options", {}),
            **parse_assignments(method_option, "--method-option"),
        }
    if out is not None:
        fields["output_dir"] = out
    if "task" not in fields:
        raise UserInputError("--task is required (or --config with a task)")
    train_config = TrainConfig.from_dict(fields)
    result = train(train_config, overwrite=overwrite)
    if not PartialState().is_main_process:
        return
    _print_metrics(
        f"{result.task} / {result.method} / seed {result.seed}",
        {"validation": result.validation, "test": result.test},
    )
    typer.echo(f"run directory: {result.run_dir}")


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


def _print_metrics(title: str, splits: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("split", "accuracy", "macro_f1", "loss"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, metrics in splits.items():
        table.add_row(
            split, *(f"{metrics.get(name, float('nan')):.4f}" for name in ("accuracy", "macro_f1", "loss"))
        )
    Console().print(table)
