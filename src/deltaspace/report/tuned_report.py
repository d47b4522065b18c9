"""docs/results.md from the tuned sweep (:mod:`deltaspace.train.tuned`): every method tuned the same way,
Coeff-Tuning on top of each, the same-budget baselines, with paired bootstrap intervals.

    deltaspace report results --config configs/sweep_tuned.yaml --output docs/results.md

Everything in the file is computed from the runs' ``result.json`` / ``predictions.json`` and the grid's
choices, including the generated reading at the top, except one hand-written paragraph between the
READING markers, which is kept when the file is regenerated (a placeholder says so until it is written).
Sections of the existing file that this report does not produce itself (written by hand or by other tools,
such as "What Coeff adds" or "An LLM with a verbalizer head") are kept too, in their order, after it.
Missing runs (a sweep still under way) are left out and counted in the header, never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deltaspace.errors import UserInputError
from deltaspace.io import write_text_atomic
from deltaspace.report.numbers import human
from deltaspace.report.stats import Interval, bootstrap_average, paired_gain
from deltaspace.report.user_tasks import user_task_section
from deltaspace.train.config import TrainConfig
from deltaspace.train.probe import PROBE
from deltaspace.train.result import CONFIG_FILE, is_finished, load_predictions, load_result
from deltaspace.train.tuned import Selection, TunedSweepConfig

HEAD_ONLY = "head"
LABELS = {
    HEAD_ONLY: "baseline: head only (label prototypes trained)",
    PROBE: "baseline: linear probe, same budget (C on validation)",
}
READING_START = "<!-- reading: written by hand, kept when this file is regenerated -->"
READING_END = "<!-- end of the hand-written reading -->"
PLACEHOLDER = (
    "_Placeholder: a short hand-written reading goes here once the tables below hold the real run's "
    "numbers. Nothing in this paragraph is measured._"
)
BUDGET_FIELDS = (
    "model",
    "max_train_examples",
    "max_length",
    "epochs",
    "batch_size",
    "eval_every",
    "max_eval_examples",
)
COLLAPSE_MARGIN = 0.005  # as `tune --task` and the user-task section count collapsed runs
# The ``## `` sections this report owns: an existing file's copy is always replaced (or dropped when the new
# report has none, e.g. no combinations), never kept beside the new one.
OWN_SECTIONS = (
    "## Reading",
    "## Test accuracy",
    "## Coeff-Tuning on top of each method",
    "## Test macro-F1",
    "## Chosen learning rates",
)
# The full-data probe of bench/linear_probe.py, relative to the working directory (the repository root).
FULL_PROBE_RESULTS = Path("bench") / "results" / "linear_probe.json"


def probe_rows(path: str | Path | None) -> dict[str, dict] | None:
    """The probe's rows by task from ``path``, plus suite v1's (``suite_v1/`` beside it) for tasks it lacks."""
    if path is None or not Path(path).is_file():
        return None
    rows: dict[str, dict] = {}
    for file in (Path(path).parent / "suite_v1" / Path(path).name, Path(path)):
        if file.is_file():
            rows.update({row["task"]: row for row in json.loads(file.read_text())["results"]})
    return rows


@dataclasses.dataclass
class Run:
    accuracy: float
    macro_f1: float
    val_accuracy: float
    params: int
    total_params: int
    correct: np.ndarray
    train_time_s: float
    majority: float = math.nan  # the majority class's test accuracy on the run's split
    best_at_end: bool = False  # the best validation score came at the run's last step (still improving)

    @property
    def collapsed(self) -> bool:
        """Test accuracy at or below the majority class (+0.005): the run predicts (nearly) one class."""
        return self.accuracy <= self.majority + COLLAPSE_MARGIN


@dataclasses.dataclass
class Results:
    """The finished runs of the comparison: ``runs[(task, method)][seed]``."""

    config: TunedSweepConfig
    selections: dict[tuple[str, str], Selection]
    runs: dict[tuple[str, str], dict[int, Run]]
    expected: int
    tasks: list[str]
    test_sizes: dict[str, int]
    settings: dict[str, dict[str, object]]  # per task: the budget fields of its runs' resolved config.json
    averages: dict[tuple[str, int], Interval] = dataclasses.field(default_factory=dict)

    def methods(self) -> list[str]:
        """Methods alone and combinations with results, by trainable parameters (baselines excluded)."""
        names = [m for m in (*self.config.methods, *self.config.combos) if m != HEAD_ONLY and self.has(m)]
        return sorted(names, key=lambda m: (self.params(m), m))

    def has(self, method: str) -> bool:
        return any(key[1] == method and runs for key, runs in self.runs.items())

    def params(self, method: str) -> float:
        counts = [r.params for (t, m), seeds in self.runs.items() if m == method for r in seeds.values()]
        return float(np.median(counts)) if counts else math.nan

    def total(self) -> float:
        counts = [r.total_params for seeds in self.runs.values() for r in seeds.values()]
        return float(np.median(counts)) if counts else math.nan

    def correct(self, method: str) -> dict[str, dict[int, np.ndarray]]:
        return {
            t: {s: r.correct for s, r in self.runs[(t, method)].items()}
            for t in self.tasks
            if self.runs.get((t, method))
        }

    def complete(self, method: str) -> bool:
        return all(self.runs.get((t, method)) for t in self.tasks)


def read_run(run_dir: Path) -> tuple[Run, list[int]]:
    """A finished run's scores and per-example test correctness, with the gold test labels."""
    result = load_result(run_dir)
    predictions, gold = load_predictions(run_dir, "test")
    majority = result.baselines.get("majority", {}).get("test", {}).get("accuracy")
    if majority is None:  # no recorded baselines: the most frequent test label's share (an upper bound)
        majority = max(np.bincount(gold)) / len(gold) if gold else math.nan
    run = Run(
        accuracy=result.test["accuracy"],
        macro_f1=result.test.get("macro_f1", math.nan),
        val_accuracy=result.validation.get("accuracy", math.nan),
        params=result.trainable_params,
        total_params=result.total_params,
        correct=np.asarray(predictions) == np.asarray(gold),
        train_time_s=result.train_time_s,
        majority=float(majority),
        best_at_end=not result.stopped_early and result.best_step == result.steps,
    )
    return run, gold


def read_runs(
    entries: list[tuple[str, str, int, Path]],
) -> tuple[dict[tuple[str, str], dict[int, Run]], dict[str, list[int]]]:
    """The finished runs of ``entries`` (task, method, seed, run folder) as ``runs[(task, method)][seed]``,
    and each task's gold test labels. Runs of one task must have been scored on the same test examples (same
    labels in the same order), or the pairing is void."""
    runs: dict[tuple[str, str], dict[int, Run]] = {}
    labels: dict[str, list[int]] = {}
    for task, method, seed, run_dir in entries:
        if not is_finished(run_dir):
            continue
        run, gold = read_run(Path(run_dir))
        if labels.setdefault(task, gold) != gold:
            raise UserInputError(
                f"{run_dir} was scored on other test examples than the other runs of {task}; every run of a "
                "task needs the same data_seed and max_eval_examples (rerun it with the sweep's settings)"
            )
        runs.setdefault((task, method), {})[seed] = run
    return runs, labels


def load_results(config: TunedSweepConfig) -> Results:
    """Every finished run of the comparison, with its per-example test correctness (:func:`read_runs`)."""
    selections = config.choose_rates(strict=False)
    expected = len(config.tasks) * (len(config.methods) + len(config.combos)) * len(config.seeds)
    expected += len(config.tasks) if config.probe is not None else 0
    entries = config.final_runs(selections)
    runs, labels = read_runs(entries)
    settings: dict[str, dict[str, object]] = {}
    for task, method, _, run_dir in entries:
        if method != PROBE and task not in settings and (run_dir / CONFIG_FILE).is_file():
            resolved = TrainConfig.from_json(run_dir / CONFIG_FILE)
            settings[task] = {field: getattr(resolved, field) for field in BUDGET_FIELDS}
    tasks = [t for t in config.tasks if t in labels]
    if not tasks:
        raise UserInputError(
            f"no finished runs of the tuned sweep under {config.out}; run `deltaspace tune` first"
        )
    return Results(config, selections, runs, expected, tasks, {t: len(labels[t]) for t in tasks}, settings)


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    values = 100 * np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def _params_cell(count: float, total: float) -> str:
    if math.isnan(count):
        return "–"
    share = 100 * count / total if total and not math.isnan(total) else math.nan
    if math.isnan(share):
        return human(count)
    return human(count) + (f" ({share:.0f}%)" if share >= 10 else f" ({share:.2g}%)")


def _average(results: Results, method: str, resamples: int) -> Interval | None:
    """The method's average over tasks with its interval (None unless it has every task); computed once."""
    if not results.complete(method):
        return None
    key = (method, resamples)
    if key not in results.averages:
        cells = {
            t: np.stack([c for _, c in sorted(seeds.items())]) for t, seeds in results.correct(method).items()
        }
        results.averages[key] = bootstrap_average(cells, resamples=resamples)
    return results.averages[key]


def _metric_table(
    results: Results, metric: str, rows: list[str], resamples: int, full_probe: dict | None
) -> list[str]:
    tasks = results.tasks
    with_ci = metric == "accuracy"
    avg_header = "Avg [95 % CI]" if with_ci else "Avg"
    lines = [
        "| Method | " + " | ".join(tasks) + f" | {avg_header} | Params |",
        "|---|" + "---:|" * (len(tasks) + 2),
    ]
    for method in rows:
        cells, means = [], []
        for task in tasks:
            seeds = results.runs.get((task, method), {})
            values = [getattr(r, metric) for _, r in sorted(seeds.items())]
            cells.append(_mean_std(values))
            if values:
                means.append(float(np.mean(values)))
        if not means:
            continue
        if results.complete(method):
            interval = _average(results, method, resamples) if with_ci else None
            average = interval.format() if interval is not None else f"{100 * np.mean(means):.1f}"
        else:
            average = f"{100 * np.mean(means):.1f}*"
        params = _params_cell(results.params(method), results.total())
        lines.append(f"| {_label(method)} | " + " | ".join(cells) + f" | {average} | {params} |")
    if full_probe is not None:
        key = "probe_accuracy" if metric == "accuracy" else "probe_macro_f1"
        for label, field in (
            ("reference: linear probe, full train split (C=10, bench/linear_probe.py)", key),
            ("reference: majority class", "majority" if metric == "accuracy" else None),
        ):
            if field is None:
                continue
            values = [full_probe.get(t, {}).get(field) for t in tasks]
            cells = [f"{100 * v:.1f}" if v is not None else "–" for v in values]
            known = [v for v in values if v is not None]
            average = (
                f"{100 * np.mean(known):.1f}" + ("" if len(known) == len(tasks) else "*") if known else "–"
            )
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {average} | – |")
    if any(line.split(" | ")[-2].endswith("*") for line in lines[2:]):
        lines += ["", "\\* averaged over the tasks this row has results for (no interval)."]
    return lines


def _paired(results: Results, a: str, b: str, resamples: int) -> tuple[Interval, dict[str, Interval]] | None:
    """Pooled paired gain ``a − b`` with its interval, and each task's (for 'helps on k tasks')."""
    return paired_gain(results.correct(a), results.correct(b), resamples=resamples)


def helps_summary(per_task: dict[str, Interval]) -> str:
    """``k/n (i with interval > 0, j < 0)``: on how many tasks the mean gain is above zero."""
    up = sum(i.estimate > 0 for i in per_task.values())
    significant_up = sum(i.low > 0 for i in per_task.values())
    significant_down = sum(i.high < 0 for i in per_task.values())
    return f"{up}/{len(per_task)} ({significant_up} with interval > 0, {significant_down} < 0)"


def _combo_section(results: Results, resamples: int) -> tuple[list[str], list[str]]:
    """The Coeff + X against X table, and the reading's sentences about it."""
    tasks = results.tasks
    lines = [
        "| X | Coeff + X − X, points [95 % CI] | tasks where it helps | " + " | ".join(tasks) + " |",
        "|---|---:|---|" + "---:|" * len(tasks),
    ]
    reading = []
    for combo in results.config.combos:
        base = combo.split("+")[1]
        if not (results.has(combo) and results.has(base)):
            continue
        paired = _paired(results, combo, base, resamples)
        if paired is None:
            continue
        pooled, per_task = paired
        cells = [f"{100 * per_task[t].estimate:+.1f}" if t in per_task else "–" for t in tasks]
        lines.append(
            f"| {base} | {pooled.format(signed=True)} | {helps_summary(per_task)} | "
            + " | ".join(cells)
            + " |"
        )
        verdict = "helps" if pooled.low > 0 else "hurts" if pooled.high < 0 else "no clear change"
        reading.append(
            f"{base} {pooled.format(signed=True)} ({verdict}; up on {sum(i.estimate > 0 for i in per_task.values())}"
            f"/{len(per_task)} tasks)"
        )
    return (lines if len(lines) > 2 else []), reading


def _frontier(results: Results, resamples: int) -> list[str]:
    """Methods that beat every method with fewer trainable parameters (complete ones only)."""
    steps: list[tuple[str, Interval]] = []
    best = -math.inf
    for method in results.methods():
        average = _average(results, method, resamples)
        if average is not None and average.estimate > best:
            steps.append((method, average))
            best = average.estimate
    parts = []
    for index, (method, average) in enumerate(steps):
        text = f"**{method}** ({human(results.params(method))} parameters, {100 * average.estimate:.1f} %"
        if index:
            paired = _paired(results, method, steps[index - 1][0], resamples)
            if paired is not None:
                text += f"; {paired[0].format(signed=True)} points over {steps[index - 1][0]}"
        parts.append(text + ")")
    return parts


def _best_vs_probe(results: Results) -> str | None:
    """Per task, the method with the best mean validation accuracy against the same-budget probe."""
    if not any(m == PROBE for _, m in results.runs):
        return None
    wins, counted = 0, 0
    for task in results.tasks:
        probe = results.runs.get((task, PROBE), {})
        candidates = [
            (np.mean([r.val_accuracy for r in seeds.values()]), method)
            for (t, method), seeds in results.runs.items()
            if t == task and seeds and method not in (PROBE, HEAD_ONLY)
        ]
        if not probe or not candidates:
            continue
        _, best = max(candidates)
        best_test = np.mean([r.accuracy for r in results.runs[(task, best)].values()])
        counted += 1
        wins += int(best_test > next(iter(probe.values())).accuracy)
    return f"{wins} of {counted}" if counted else None


def _rates_table(results: Results) -> list[str]:
    tasks = results.tasks
    lines = ["| Method | preset | " + " | ".join(tasks) + " |", "|---|---:|" + "---:|" * len(tasks)]
    presets = results.config.preset_rates()
    for method in results.config.methods:
        cells = []
        for task in tasks:
            chosen = results.selections.get((task, method))
            if chosen is None:
                cells.append("–")
                continue
            edge = ""
            if chosen.at_edge:
                edge = " ↓" if chosen.lr == min(chosen.scores) else " ↑"
            cells.append(f"{chosen.lr:.3g}{edge}")
        lines.append(f"| {_label(method)} | {presets[method]:.3g} | " + " | ".join(cells) + " |")
    if any(is_finished(results.config.probe_dir(task)) for task in tasks):
        chosen_c = [
            f"C={load_result(results.config.probe_dir(t)).method_options.get('C'):g}"
            if is_finished(results.config.probe_dir(t))
            else "–"
            for t in tasks
        ]
        lines.append(f"| {_label(PROBE)} | – | " + " | ".join(chosen_c) + " |")
    return lines


def _budget(results: Results) -> str:
    """The budget as the runs were trained (their resolved config.json), not as a config file says."""
    settings = results.settings

    def values(field: str) -> dict[object, list[str]]:
        by_value: dict[object, list[str]] = {}
        for task in results.tasks:
            if task in settings:
                by_value.setdefault(settings[task][field], []).append(task)
        return by_value

    def describe(field: str, unit: str) -> str:
        by_value = sorted(values(field).items(), key=lambda item: -len(item[1]))
        if not by_value:
            return "–"
        (common, _), rest = by_value[0], by_value[1:]
        text = f"{common:,}{unit}" if isinstance(common, int) else f"{common}{unit}"
        return text + "".join(f" ({', '.join(tasks)}: {value}{unit})" for value, tasks in rest)

    caps = values("max_eval_examples")
    cap = next(iter(caps)) if len(caps) == 1 else None
    small = [
        f"{t} {n} ({'its whole test split' if cap is None or n < cap else 'capped by max_eval_examples'})"
        for t, n in results.test_sizes.items()
        if n < 500
    ]
    sizes = results.test_sizes.values()
    tests = f"{min(sizes):,}–{max(sizes):,} test examples per task"
    tests += f"; under 500: {', '.join(small)}" if small else ""
    return (
        f"**Budget per run** (the same for every method and the same-budget probe): up to "
        f"{describe('max_train_examples', '')} training examples (a task's whole train split when smaller), "
        f"inputs cut at {describe('max_length', ' tokens')}, {describe('epochs', ' epochs')} of batch "
        f"{describe('batch_size', '')}, best validation checkpoint (evaluated every "
        f"{describe('eval_every', ' steps')}), model {describe('model', '')}; {tests}."
    )


def suite_line(tasks: list[str]) -> str:
    """Which task suite a report measured, and how to get it back where it is no longer fetched by default."""
    from deltaspace.tasks import BIGBENCH_TASKS, SUITE_TASKS

    bigbench = [t for t in tasks if t in BIGBENCH_TASKS]
    if bigbench:
        return (
            f"**Suite:** v1 ({len(tasks)} tasks; {len(bigbench)} from BIG-bench, which PyPI no longer serves, so "
            "a default `deltaspace fetch` does not get them). To reproduce: `deltaspace fetch --bigbench-dir "
            "CHECKOUT` with a BIG-bench checkout (or `--with bigbench --packages-dir DIR` with the old "
            "bigbench-1.0.0.tar.gz), then the command above. Suite v2: `configs/sweep_tuned_v2.yaml`."
        )
    if all(t in SUITE_TASKS for t in tasks):
        return f"**Suite:** v2 ({len(tasks)} of its {len(SUITE_TASKS)} tasks; `docs/tasks.md`)."
    return f"**Tasks:** {', '.join(tasks)}."


def tuned_report(
    config: TunedSweepConfig, command: str, *, full_probe: str | Path | None = None, resamples: int = 2000
) -> str:
    """The markdown of docs/results.md (without the hand-written reading, see :func:`write_tuned_report`)."""
    results = load_results(config)
    full_probe_rows = probe_rows(full_probe)
    found = sum(len(seeds) for seeds in results.runs.values())
    grid = ", ".join(f"×{m:g}" for m in sorted(config.lr_grid))
    seeds = ", ".join(map(str, config.seeds))
    methods = results.methods()
    rows = methods + [m for m in (HEAD_ONLY, PROBE) if results.has(m)]
    combos, combo_reading = _combo_section(results, resamples)
    frontier = _frontier(results, resamples)
    against_probe = _best_vs_probe(results)
    edges = [s for s in results.selections.values() if s.at_edge]
    hours = sum(r.train_time_s for seeds in results.runs.values() for r in seeds.values()) / 3600

    reading = []
    if frontier:
        reading.append(
            "**Which method at which parameter budget** (each step beats every method with fewer trainable "
            "parameters; methods not listed are beaten by a smaller one): " + " → ".join(frontier) + "."
        )
    if against_probe is not None:
        reading.append(
            f"**Does training matter at this budget?** The method with the best validation accuracy beats the "
            f"same-budget linear probe on test on {against_probe} tasks."
        )
    if combo_reading:
        reading.append(
            "**What Coeff adds** (Coeff + X − X, test accuracy points, paired by seed, pooled over tasks, 95 % "
            "CI): " + "; ".join(combo_reading) + "."
        )
    if results.has("coeff") and results.has("lora"):
        paired = _paired(results, "coeff", "lora", resamples)
        if paired is not None:
            reading.append(
                f"**Coeff alone against tuned LoRA**: {paired[0].format(signed=True)} points with "
                f"{human(results.params('coeff'))} parameters against {human(results.params('lora'))}."
            )
    if edges:
        reading.append(
            f"The chosen learning rate is at the edge of the grid for {len(edges)} of {len(results.selections)} "
            "(task, method) pairs (marked ↓ / ↑ below): a wider grid could move those."
        )

    lines = [
        "# Every delta-tuning method on the suite, each tuned the same way (MiniLM-L6)",
        "",
        f"Produced by: `{command}`, from {found} of the {results.expected} runs of `{config.out}` "
        f"({'all' if found == results.expected else 'a sweep still under way: missing runs are left out'}; "
        f"{hours:.2f} h of training time in all).",
        "",
        suite_line(config.tasks),
        "",
        _budget(results),
        "",
        f"**Tuning:** each method's learning rate from a grid of its preset rate {grid}, chosen per task on "
        f"validation {config.select} (seed {config.seeds[0]}; ties: lower validation loss, then the rate nearer "
        f"the preset); then seeds {seeds} at the chosen rate (the seed-{config.seeds[0]} grid run is seed "
        f"{config.seeds[0]}). Coeff + X trains X at X's chosen rate and ΔC at Coeff's own chosen rate "
        "(`lr_overrides`), so both parts are tuned exactly as they are alone. The same-budget linear probe "
        "sees the same training examples and token limit, with its C chosen on validation. Head: label "
        "prototypes (cosine to the frozen model's embedding of each label name); the head-only row trains "
        "those prototypes and nothing else.",
        "",
        "**Statistics:** cells are test accuracy (%), mean ± std over seeds. Intervals are paired bootstrap "
        f"95 % intervals ({resamples} replicates resampling each task's test examples and its seeds); a "
        "method's average is over tasks; gains are paired on the same seed and test examples. Params: "
        "trainable parameters (median over tasks: the head-only and probe rows grow with the classes).",
        "",
        "## Reading",
        "",
        *[f"- {sentence}" for sentence in reading],
        "",
        READING_START,
        PLACEHOLDER,
        READING_END,
        "",
        "## Test accuracy",
        "",
        *_metric_table(results, "accuracy", rows, resamples, full_probe_rows),
        "",
    ]
    if combos:
        lines += [
            "## Coeff-Tuning on top of each method",
            "",
            "Paired by seed on the same test examples; 'tasks where it helps': the mean gain over seeds is "
            "above zero (in brackets: how many tasks have a per-task interval wholly above / below zero).",
            "",
            *combos,
            "",
        ]
    lines += [
        "## Test macro-F1",
        "",
        *_metric_table(results, "macro_f1", rows, resamples, full_probe_rows),
        "",
        "## Chosen learning rates",
        "",
        "Per task, the rate with the best validation score (↓ / ↑: the grid's smallest / largest rate).",
        "",
        *_rates_table(results),
        "",
    ]
    lines += user_task_section() or []  # bench/user_tasks/measure.py's, kept across regenerations
    return "\n".join(lines) + "\n"


def kept_reading(path: Path, start: str = READING_START, end: str = READING_END) -> str | None:
    """The hand-written text between the markers ``start`` and ``end`` of an existing file, if it has one."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if start in text and end in text.split(start, 1)[1]:
        return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
    return None


def sections(markdown: str) -> list[tuple[str, str]]:
    """The ``## `` sections of ``markdown`` as ``(heading line, section text)``, each from its heading up to
    the next ``## `` heading (lines in fenced code blocks are not headings); the text before the first
    heading is left out."""
    found: list[tuple[str, list[str]]] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None and line.startswith("## "):
            found.append((line.rstrip(), []))
        if found:
            found[-1][1].append(line)
    return [(heading, "\n".join(lines).strip("\n")) for heading, lines in found]


def kept_sections(path: Path, report: str) -> list[str]:
    """The sections of the existing file ``path`` that ``report`` does not produce (neither one of
    :data:`OWN_SECTIONS` nor a heading ``report`` has), in their order in the file."""
    if not path.is_file():
        return []
    produced = {*OWN_SECTIONS, *(heading for heading, _ in sections(report))}
    return [text for heading, text in sections(path.read_text(encoding="utf-8")) if heading not in produced]


def write_tuned_report(
    config: TunedSweepConfig,
    output: str | Path,
    command: str,
    *,
    full_probe: str | Path | None = FULL_PROBE_RESULTS,
    resamples: int = 2000,
) -> str:
    """Write :func:`tuned_report` to ``output`` atomically, keeping its hand-written reading and, after the
    generated part, every section of the existing file that the report does not produce
    (:func:`kept_sections`)."""
    report = tuned_report(config, command, full_probe=full_probe, resamples=resamples)
    kept = kept_reading(Path(output))
    if kept is not None:
        report = report.replace(f"{READING_START}\n{PLACEHOLDER}\n", f"{READING_START}\n{kept}\n", 1)
    others = kept_sections(Path(output), report)
    if others:
        report = report.rstrip("\n") + "\n\n" + "\n\n".join(others) + "\n"
    write_text_atomic(output, report)
    return report
