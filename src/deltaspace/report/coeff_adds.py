"""The "What Coeff adds" section of docs/results.md (issue 20): does Coeff-Tuning add to other methods, measured
two ways.

    tuned  ``configs/coeff_adds.yaml``, a tuned sweep with ``combo_tuning`` (:mod:`deltaspace.train.tuned`):
           X at its own tuned rate; ΔC's rate chosen per task on validation among X's rate itself (one rate
           for every parameter, the paper's protocol) and multiples of Coeff's own chosen rate, then Coeff
           dropout at that rate; seeds at the choice.
    paper  ``configs/coeff_paper_regime.yaml``, a plain sweep (:mod:`deltaspace.train.sweep`): the paper's
           regime, like VTAB-1k: 1,000 training examples, long training early-stopped on validation, one
           AdamW rate for every parameter with cosine decay and weight decay 1e-4.
    one_rate  ``configs/coeff_one_rate.yaml``, a plain sweep at the tuned comparison's budget with one rate
           for every parameter (X's preset rate, ΔC included): item 1's one-rate point without the rate
           search, the part of the question a 2-core machine can answer.
    own_rate  ``configs/coeff_own_rate.yaml``, its other arm: the same tasks, seeds and X runs, with ΔC at
           Coeff's own preset rate (as suite v1's tuned comparison combined them), so the two differ in ΔC's
           rate alone.

    deltaspace report coeff-adds     # writes or replaces the section in docs/results.md

Per protocol and X: the mean over tasks of Coeff + X − X in test accuracy points, paired by task, seed and test
example, with its paired bootstrap 95 % interval (:mod:`deltaspace.report.stats`); on how many tasks the mean
gain is above zero; the collapsed runs of each side (test accuracy at or below the majority class + 0.005: the
run predicts one class); Coeff alone − LoRA at the same budget; the runs still improving when training ended
(best validation at the last step: more epochs might have helped). The issue's target: Coeff + X − X ≥ +0.5
points with an interval above 0 for at least two X under the paper's protocol, or a documented null.

Only this section of the file is replaced (the rest is kept, and so is a hand-written reading between this
section's markers). Missing runs (a sweep still under way) are left out and counted, never guessed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from deltaspace.errors import UserInputError
from deltaspace.io import write_text_atomic
from deltaspace.report.numbers import human
from deltaspace.report.stats import Interval, paired_gain
from deltaspace.report.tuned_report import Run, helps_summary, kept_reading, read_runs
from deltaspace.report.user_tasks import replace_section
from deltaspace.train.config import TrainConfig
from deltaspace.train.probe import PROBE
from deltaspace.train.result import CONFIG_FILE, is_finished, slug
from deltaspace.train.sweep import SweepConfig
from deltaspace.train.tuned import ComboChoice, TunedSweepConfig

HEADING = "## What Coeff adds"
TARGET = 0.005  # the issue's target gain: +0.5 accuracy points, with an interval above 0 ...
TARGET_XS = 2  # ... for at least two X under the paper's protocol
READING_START = "<!-- What Coeff adds, reading: written by hand, kept when this section is regenerated -->"
READING_END = "<!-- end of the hand-written reading of What Coeff adds -->"
PLACEHOLDER = (
    "_Placeholder: a short hand-written reading goes here once the tables above hold the real runs' numbers. "
    "Nothing in this paragraph is measured._"
)
# The settings of a protocol's runs as trained (their config.json), shown under its table.
SHOWN_FIELDS = (
    "model",
    "head",
    "max_train_examples",
    "epochs",
    "batch_size",
    "lr",
    "lr_overrides",
    "weight_decay",
    "schedule",
    "warmup_ratio",
    "early_stopping_patience",
    "max_eval_examples",
)


@dataclasses.dataclass
class Protocol:
    """The finished runs of one protocol: ``runs[(task, method)][seed]``."""

    name: str  # "tuned" or "paper"
    title: str
    config_path: str
    out: str
    tasks: list[str]
    combos: list[str]
    runs: dict[tuple[str, str], dict[int, Run]]
    expected: int
    settings: dict[str, str]  # field -> its value over the finished runs ("varies" when they differ)
    choices: dict[tuple[str, str], ComboChoice] = dataclasses.field(default_factory=dict)
    gains: dict[int, list[Gain]] = dataclasses.field(default_factory=dict)  # by resamples: computed once

    def correct(
        self, method: str, *, skip: set[tuple[str, int]] = frozenset()
    ) -> dict[str, dict[int, np.ndarray]]:
        """Per task and seed, which test examples ``method`` got right; the (task, seed) pairs in ``skip`` left out."""
        found: dict[str, dict[int, np.ndarray]] = {}
        for (task, m), seeds in self.runs.items():
            kept = {s: r.correct for s, r in seeds.items() if m == method and (task, s) not in skip}
            if kept:
                found[task] = kept
        return found

    def collapsed_pairs(self, *methods: str) -> set[tuple[str, int]]:
        """The (task, seed) pairs where a run of one of ``methods`` collapsed."""
        return {
            (t, s)
            for (t, m), seeds in self.runs.items()
            if m in methods
            for s, r in seeds.items()
            if r.collapsed
        }

    def all_runs(self, method: str) -> list[Run]:
        return [r for (_, m), seeds in self.runs.items() if m == method for r in seeds.values()]

    def collapsed(self, method: str) -> str:
        """``k/n``: how many of the method's finished runs collapsed to the majority class."""
        runs = self.all_runs(method)
        return f"{sum(r.collapsed for r in runs)}/{len(runs)}"

    def params(self, method: str) -> float:
        counts = [r.params for r in self.all_runs(method)]
        return float(np.median(counts)) if counts else float("nan")

    @property
    def found(self) -> int:
        return sum(len(seeds) for seeds in self.runs.values())


TITLES = {
    "tuned": "Tuned rates, ΔC's rate and dropout tuned for the combination",
    "paper": "The paper's regime: 1,000 examples, long training, one rate for every parameter",
    "one_rate": "The tuned comparison's budget, one rate for every parameter (X's preset rate, ΔC included)",
    "own_rate": "The tuned comparison's budget, ΔC at Coeff's own rate (X at its preset rate)",
}


def _settings(entries: list[tuple[str, str, int, Path]]) -> dict[str, str]:
    """Each shown field's value over the finished runs' resolved config.json ("varies" when they differ)."""
    values: dict[str, set[str]] = {field: set() for field in SHOWN_FIELDS}
    for *_, run_dir in entries:
        if (Path(run_dir) / CONFIG_FILE).is_file() and is_finished(run_dir):
            resolved = TrainConfig.from_json(Path(run_dir) / CONFIG_FILE)
            for field in SHOWN_FIELDS:
                values[field].add(_text(getattr(resolved, field)))
    return {f: (next(iter(v)) if len(v) == 1 else "varies") for f, v in values.items() if v}


def _text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _protocol(
    name: str, path: str | Path, out: str, tasks: list[str], combos: list[str], entries: list, expected: int
) -> Protocol:
    runs, labels = read_runs(entries)
    return Protocol(
        name=name,
        title=TITLES[name],
        config_path=str(path),
        out=out,
        tasks=[t for t in tasks if t in labels],
        combos=combos,
        runs=runs,
        expected=expected,
        settings=_settings(entries),
    )


def tuned_protocol(config: TunedSweepConfig, path: str | Path) -> Protocol:
    """Item 1's runs: every method and combination at its chosen configuration (the probe left out)."""
    selections = config.choose_rates(strict=False)
    entries = [entry for entry in config.final_runs(selections) if entry[1] != PROBE]
    expected = len(config.tasks) * (len(config.methods) + len(config.combos)) * len(config.seeds)
    protocol = _protocol("tuned", path, config.out, config.tasks, config.combos, entries, expected)
    if config.combo_tuning is not None:
        combo_rates = config.choose_combo_rates(selections, strict=False)
        protocol.choices = config.choose_combos(selections, combo_rates, strict=False)
    return protocol


def sweep_protocol(name: str, config: SweepConfig, path: str | Path) -> Protocol:
    """A plain sweep's runs (tasks x methods x seeds); its combinations are the methods "A+B"."""
    entries = [(spec.task, spec.method, spec.seed, spec.run_dir) for spec in config.runs()]
    combos = [m for m in config.methods if "+" in m]
    return _protocol(name, path, config.out, config.tasks, combos, entries, len(entries))


def paper_protocol(config: SweepConfig, path: str | Path) -> Protocol:
    """Item 2's runs (the paper's regime)."""
    return sweep_protocol("paper", config, path)


# --- rendering ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Gain:
    """Coeff + X − X under one protocol."""

    combo: str
    x: str
    pooled: Interval
    per_task: dict[str, Interval]
    uncollapsed: Interval | None  # over the (task, seed) pairs where neither run collapsed

    @property
    def meets_target(self) -> bool:
        return self.pooled.estimate >= TARGET and self.pooled.low > 0

    @property
    def verdict(self) -> str:
        return "helps" if self.pooled.low > 0 else "hurts" if self.pooled.high < 0 else "no clear change"


def gains(protocol: Protocol, resamples: int) -> list[Gain]:
    """Coeff + X − X for every combination "A+X" whose two sides have finished runs."""
    if resamples not in protocol.gains:
        protocol.gains[resamples] = _gains(protocol, resamples)
    return protocol.gains[resamples]


def _gains(protocol: Protocol, resamples: int) -> list[Gain]:
    found = []
    for combo in protocol.combos:
        x = combo.split("+")[-1]
        paired = paired_gain(protocol.correct(combo), protocol.correct(x), resamples=resamples)
        if paired is None:
            continue
        skip = protocol.collapsed_pairs(combo, x)
        kept = paired_gain(
            protocol.correct(combo, skip=skip), protocol.correct(x, skip=skip), resamples=resamples
        )
        found.append(Gain(combo, x, *paired, kept[0] if kept is not None else None))
    return found


def _gain_table(protocol: Protocol, found: list[Gain]) -> list[str]:
    tasks = protocol.tasks
    lines = [
        "| X | Coeff + X − X, points [95 % CI] | tasks where it helps | collapsed runs: Coeff + X, X | "
        "without collapsed pairs | " + " | ".join(map(slug, tasks)) + " |",
        "|---|---:|---|---|---:|" + "---:|" * len(tasks),
    ]
    for gain in found:
        cells = [f"{100 * gain.per_task[t].estimate:+.1f}" if t in gain.per_task else "–" for t in tasks]
        collapsed = f"{protocol.collapsed(gain.combo)}, {protocol.collapsed(gain.x)}"
        kept = gain.uncollapsed.format(signed=True) if gain.uncollapsed is not None else "–"
        lines.append(
            f"| {gain.x} | {gain.pooled.format(signed=True)} | {helps_summary(gain.per_task)} | {collapsed} | "
            f"{kept} | " + " | ".join(cells) + " |"
        )
    return lines


def _uncollapsed(gain: Gain) -> str:
    if gain.uncollapsed is None:
        return "; every pair has a collapsed run"
    return f"; {gain.uncollapsed.format(signed=True)} without collapsed pairs"


def coeff_against_lora(protocol: Protocol, resamples: int) -> Interval | None:
    """Coeff alone − LoRA at the same training budget, paired by task, seed and example."""
    paired = paired_gain(protocol.correct("coeff"), protocol.correct("lora"), resamples=resamples)
    return None if paired is None else paired[0]


def _choices(protocol: Protocol) -> list[str]:
    """Item 1's choices: ΔC's rate (one rate vs Coeff's own) and the dropout per task and combination."""
    if not protocol.choices:
        return []
    chosen = list(protocol.choices.values())
    rates = Counter(
        "one rate" if c.one_rate else "own ×1" if c.rate_label == "×1" else "other" for c in chosen
    )
    option = chosen[0].option
    values = Counter(c.value for c in chosen)
    lines = [
        f"**ΔC's rate chosen** (validation accuracy, seed 0) for {len(chosen)} (task, X) pairs: X's own rate "
        f"(one rate for every parameter; also where it is a multiple of Coeff's) on {rates['one rate']}, "
        f"Coeff's own chosen rate (×1) on {rates['own ×1']}, another multiple of it on {rates['other']}"
        + (
            f"; {option}: " + ", ".join(f"{v:g} on {n}" for v, n in sorted(values.items()))
            if option is not None
            else ""
        )
        + ".",
        "",
        "| Coeff + X | " + " | ".join(map(slug, protocol.tasks)) + " |",
        "|---|" + "---|" * len(protocol.tasks),
    ]
    for combo in protocol.combos:
        cells = []
        for task in protocol.tasks:
            choice = protocol.choices.get((task, combo))
            value = "" if choice is None or choice.value is None else f", {choice.value:g}"
            cells.append("–" if choice is None else f"{choice.rate_label}{value}")
        lines.append(f"| {combo} | " + " | ".join(cells) + " |")
    return lines


def _settings_line(protocol: Protocol) -> str:
    shown = ", ".join(f"{field} {value}" for field, value in protocol.settings.items())
    return f"As trained (the runs' config.json): {shown}." if shown else ""


def protocol_lines(protocol: Protocol, resamples: int) -> tuple[list[str], str]:
    """A protocol's subsection, and its sentence for the reading."""
    state = (
        "all" if protocol.found == protocol.expected else "a sweep still under way: missing runs are left out"
    )
    lines = [
        f"### {protocol.title}",
        "",
        f"`{protocol.config_path}` → `{protocol.out}`: {protocol.found} of {protocol.expected} runs ({state}).",
        "",
    ]
    if not protocol.runs:
        return [*lines, "No finished runs yet.", ""], f"*{protocol.title}*: not run yet."
    found = gains(protocol, resamples)
    parts = []
    if found:
        lines += [*_gain_table(protocol, found), ""]
        met = [g.x for g in found if g.meets_target]
        parts.append(
            "Coeff + X − X: "
            + "; ".join(f"{g.x} {g.pooled.format(signed=True)} ({g.verdict}{_uncollapsed(g)})" for g in found)
            + f"; ≥ +{100 * TARGET:.1f} points with an interval above 0 for {len(met)} of {len(found)} X"
            + (f" ({', '.join(met)})" if met else "")
        )
    against = coeff_against_lora(protocol, resamples)
    if against is not None:
        lines += [
            f"**Coeff alone − LoRA** (the same training budget): {against.format(signed=True)} points, with "
            f"{human(protocol.params('coeff'))} trainable parameters against {human(protocol.params('lora'))}; "
            f"collapsed runs: Coeff {protocol.collapsed('coeff')}, LoRA {protocol.collapsed('lora')}.",
            "",
        ]
        parts.append(f"Coeff alone − LoRA {against.format(signed=True)}")
    every = [r for seeds in protocol.runs.values() for r in seeds.values()]
    lines += [
        "Runs still improving when training ended (best validation at the last step): "
        f"{sum(r.best_at_end for r in every)} of {len(every)}; collapsed runs (test accuracy ≤ majority class "
        f"+ 0.5 points): {sum(r.collapsed for r in every)} of {len(every)}.",
        "",
    ]
    if protocol.choices:
        lines += [*_choices(protocol), ""]
    settings = _settings_line(protocol)
    sentence = f"*{protocol.title}*: " + ("; ".join(parts) or "no pair of Coeff + X and X finished yet") + "."
    return ([*lines, settings, ""] if settings else lines), sentence


def _target_sentence(protocols: list[Protocol], resamples: int) -> str | None:
    paper = next((p for p in protocols if p.name == "paper" and p.runs), None)
    if paper is None:
        return None
    found = gains(paper, resamples)
    met = [g.x for g in found if g.meets_target]
    complete = paper.found == paper.expected
    verdict = (
        f"met ({', '.join(met)})"
        if len(met) >= TARGET_XS
        else f"not met ({len(met)} of {len(found)} X): under this protocol, a null"
    )
    return (
        f"**Target** (Coeff + X − X ≥ +{100 * TARGET:.1f} points with an interval above 0 for at least "
        f"{TARGET_XS} X under the paper's regime): {verdict}"
        + ("." if complete else " so far (the sweep is still under way).")
    )


def coeff_adds_section(protocols: list[Protocol], command: str, *, resamples: int = 2000) -> list[str]:
    """The section's markdown lines (with the hand-written reading's placeholder)."""
    if not any(p.runs for p in protocols):
        raise UserInputError(
            "no finished runs of either protocol: run `deltaspace tune --config configs/coeff_adds.yaml` and "
            "`deltaspace sweep --config configs/coeff_paper_regime.yaml` (or bench/coeff_adds.sh) first"
        )
    bodies, reading = [], []
    for protocol in protocols:
        body, sentence = protocol_lines(protocol, resamples)
        bodies += body
        reading.append(sentence)
    target = _target_sentence(protocols, resamples)
    if target is not None:
        reading.append(target)
    return [
        HEADING,
        "",
        f"Produced by: `{command}`. Does Coeff-Tuning add to other methods (issue 20)? Coeff + X against X "
        "under up to four protocols: X at its own tuned rate with ΔC's rate (X's rate, the paper's one rate, "
        "or around Coeff's own choice) and Coeff dropout tuned for the combination on validation; the "
        "paper's regime (1,000 training examples, long training early-stopped on validation, one AdamW rate "
        "for every parameter, cosine decay, weight decay 1e-4); and the tuned comparison's budget with one "
        "rate for every parameter (X's preset rate, ΔC included) or with ΔC at Coeff's own rate, on the same "
        "tasks, seeds and X runs. Gains are test accuracy points averaged over "
        f"tasks, paired by task, seed and test example, with paired bootstrap 95 % intervals ({resamples} "
        "replicates resampling each task's test examples and seeds); 'tasks where it helps': the mean gain "
        "over seeds is above zero (in brackets: tasks whose own interval is wholly above / below zero). A "
        "collapsed run scored at or below its majority class + 0.5 points (it predicts one class); 'without "
        "collapsed pairs': the gain over the (task, seed) pairs where neither run collapsed.",
        "",
        "### Reading",
        "",
        *[f"- {sentence}" for sentence in reading],
        "",
        READING_START,
        PLACEHOLDER,
        READING_END,
        "",
        *bodies,
    ]


def write_coeff_adds(
    protocols: list[Protocol], output: str | Path, command: str, *, resamples: int = 2000
) -> str:
    """Write or replace the section in ``output`` (created when absent), keeping the rest of the file and
    the section's hand-written reading; returns the file's new text."""
    output = Path(output)
    section = coeff_adds_section(protocols, command, resamples=resamples)
    kept = kept_reading(output, READING_START, READING_END)
    if kept is not None:
        section[section.index(PLACEHOLDER)] = kept
    text = output.read_text(encoding="utf-8") if output.is_file() else ""
    new = replace_section(text, section, HEADING) if text.strip() else "\n".join(section) + "\n"
    write_text_atomic(output, new)
    return new
