"""The tuned sweep: every method's learning rate chosen on validation per task, then seeds at that rate.

Two phases, each resumable and shardable like :mod:`deltaspace.train.sweep` (a finished run is skipped; a
killed one resumes; ``shard=(i, n)`` takes every n-th run of the phase's sorted run list)::

    grid   every method alone x task x learning rate (each method's preset rate times ``lr_grid``), seed
           ``seeds[0]``, into <out>/grid/<task>/<method>/lr<rate>/seed<s>/; and the same-budget linear
           probe per task (its C chosen on validation the same way) into <out>/probe/<task>/
    seeds  per task, each method at the rate whose grid run scored best on validation (``select``; ties:
           lower validation loss, then the rate nearer the preset), for the other seeds, into
           <out>/seeds/<task>/<method>/lr<rate>/seed<k>/ (the seed-0 grid run at that rate is seed 0, not
           rerun);
           and every combination "A+B" (e.g. coeff+lora) for all seeds, with B's chosen rate as its rate
           and A's chosen rate for A's parameters (``lr_overrides``, e.g. ``{ds_coeff: rate}``), so each
           part of a combination is tuned exactly as it is alone. A seeds folder names its rate(s), so a
           choice that changes (a wider grid) gets new runs beside the old ones, not a settings mismatch.

The seeds phase reads the grid's results from the run folder, so it may run on other machines or later;
run before the grid phase has finished it stops with one line saying how many grid runs are missing.
The rate is chosen per task (not per task family): the suite's tasks differ in size, classes and length.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from deltaspace.attention.hooks import COEFF_HOOK
from deltaspace.errors import UserInputError
from deltaspace.train.config import METRICS, TrainConfig
from deltaspace.train.config_file import read_config_file
from deltaspace.train.probe import PROBE
from deltaspace.train.result import is_finished, load_result
from deltaspace.train.sweep import RunSpec, slug

PHASES = ("grid", "seeds")
_KEYS = (
    "out",
    "tasks",
    "methods",
    "combos",
    "seeds",
    "lr_grid",
    "select",
    "train",
    "method_overrides",
    "task_overrides",
    "probe",
    "lr_keys",
)
_RESERVED = ("task", "method", "seed", "output_dir", "lr", "lr_overrides")


class IncompleteGridError(UserInputError):
    """The seeds phase was started before the grid runs it depends on had finished."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """The rate chosen for one (task, method) and the validation score of every rate tried."""

    task: str
    method: str
    lr: float
    scores: dict[float, float]
    run_dir: str

    @property
    def at_edge(self) -> bool:
        """True when the best rate is the grid's smallest or largest: the grid may not bracket the optimum."""
        return len(self.scores) > 1 and self.lr in (min(self.scores), max(self.scores))


@dataclasses.dataclass
class TunedSweepConfig:
    """What the tuned sweep runs (see the module docstring); ``train`` / ``method_overrides`` /
    ``task_overrides`` are :class:`~deltaspace.train.sweep.SweepConfig`'s. A method's preset rate (the grid's
    centre) is its ``method_overrides`` ``lr``, else ``train.lr``, else the preset's rate. ``probe``: the same-budget probe's
    options (``{C: [...]}``), or ``None`` for no probe. ``lr_keys`` maps the first part A of a combination
    to the parameter-name substring that gets A's rate."""

    out: str
    tasks: list[str]
    methods: list[str]
    combos: list[str] = dataclasses.field(default_factory=list)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    lr_grid: list[float] = dataclasses.field(default_factory=lambda: [0.316, 1.0, 3.16])
    select: str = "accuracy"
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    task_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    probe: dict[str, Any] | None = dataclasses.field(default_factory=dict)
    lr_keys: dict[str, str] = dataclasses.field(default_factory=lambda: {"coeff": COEFF_HOOK})

    def __post_init__(self) -> None:
        for name in ("tasks", "methods", "seeds", "lr_grid"):
            values = getattr(self, name)
            if not isinstance(values, list) or not values:
                raise UserInputError(f"tuned sweep {name} must be a non-empty list, got {values!r}")
            if len(set(values)) != len(values):
                raise UserInputError(f"tuned sweep {name} lists a value twice: {values}")
        if not isinstance(self.combos, list) or len(set(self.combos)) != len(self.combos):
            raise UserInputError(f"tuned sweep combos must be a list of distinct names, got {self.combos!r}")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise UserInputError(f"tuned sweep seeds must be integers >= 0, got {self.seeds}")
        if any(
            not isinstance(m, (int, float)) or isinstance(m, bool) or not math.isfinite(m) or m <= 0
            for m in self.lr_grid
        ):
            raise UserInputError(
                f"lr_grid holds multiples of each method's preset rate (positive numbers), got {self.lr_grid}"
            )
        if self.select not in METRICS:
            raise UserInputError(
                f"select must be one of {', '.join(METRICS)} (a validation metric), got {self.select!r}"
            )
        for name in ("train", "method_overrides", "task_overrides", "lr_keys"):
            if not isinstance(getattr(self, name), dict):
                raise UserInputError(f"tuned sweep {name} must be a mapping, got {getattr(self, name)!r}")
        if self.probe is not None and not isinstance(self.probe, dict):
            raise UserInputError(
                f"tuned sweep probe must be a mapping (e.g. {{C: [0.1, 1, 10]}}) or null, got {self.probe!r}"
            )
        reserved = sorted(set(self.train) & set(_RESERVED))
        if reserved:
            raise UserInputError(f"tuned sweep train settings may not set {reserved}; the sweep sets them")
        if PROBE in self.methods or PROBE in self.combos:
            raise UserInputError(
                f"{PROBE!r} is the baseline the tuned sweep adds itself (`probe:`); drop it from methods"
            )
        for combo in self.combos:
            parts = combo.split("+") if isinstance(combo, str) else []
            if len(parts) != 2 or not all(part in self.methods for part in parts):
                raise UserInputError(
                    f"combination {combo!r} must be A+B (no spaces) with A and B both in methods "
                    f"{self.methods} (each part is tuned alone first)"
                )
            if parts[0] not in self.lr_keys:
                raise UserInputError(
                    f"combination {combo!r}: lr_keys names no parameter substring for {parts[0]!r} "
                    f"(e.g. lr_keys: {{coeff: ds_coeff}}), so its own rate cannot be applied"
                )
        stray = sorted(set(self.method_overrides) - set(self.methods) - set(self.combos))
        if stray:
            raise UserInputError(f"method_overrides name {stray}, which the sweep does not run")
        for combo in self.combos:
            if "lr" in self.method_overrides.get(combo, {}) or "lr_overrides" in self.method_overrides.get(
                combo, {}
            ):
                raise UserInputError(
                    f"method_overrides for combination {combo!r} may not set lr: its rates are its parts' chosen rates"
                )
        stray = sorted(set(self.task_overrides) - set(self.tasks))
        if stray:
            raise UserInputError(f"task_overrides name {stray}, which the sweep does not run")
        for label, overrides in (
            ("method_overrides", self.method_overrides),
            ("task_overrides", self.task_overrides),
        ):
            for name, fields in overrides.items():
                if not isinstance(fields, dict):
                    raise UserInputError(f"{label} for {name!r} must be a mapping of TrainConfig fields")
                if "lr_overrides" in fields:
                    raise UserInputError(
                        f"{label} for {name!r} may not set lr_overrides; the sweep sets them"
                    )
        # Build every config now, so a bad setting fails before the first run starts.
        self.phase_runs("grid")
        self.preset_rates()

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TunedSweepConfig:
        """Read a YAML/JSON tuned sweep config; non-None ``overrides`` replace its keys (``train`` is merged).
        Narrowing ``tasks`` / ``methods`` drops the overrides and combinations that no longer apply."""
        path = Path(path)
        data = read_config_file(path, "tuned sweep config", _KEYS, overrides)
        if overrides.get("methods") is not None:
            kept = set(overrides["methods"])
            if overrides.get("combos") is None:
                data["combos"] = [c for c in data.get("combos", []) if set(c.split("+")) <= kept]
            kept |= set(data.get("combos", []))
            data["method_overrides"] = {
                k: v for k, v in data.get("method_overrides", {}).items() if k in kept
            }
        if overrides.get("tasks") is not None:
            data["task_overrides"] = {
                k: v for k, v in data.get("task_overrides", {}).items() if k in overrides["tasks"]
            }
        if "out" not in data:
            raise UserInputError(
                f"tuned sweep config {path} needs an output directory: set `out:` or pass --out"
            )
        return cls(**data)

    # --- configs ---------------------------------------------------------------------------------------

    def _fields(self, task: str, method: str) -> dict[str, Any]:
        fields = dict(self.train)
        for overrides in (self.method_overrides.get(method, {}), self.task_overrides.get(task, {})):
            overrides = dict(overrides)
            options = overrides.pop("method_options", None)
            if options is not None:
                fields["method_options"] = {**fields.get("method_options", {}), **options}
            fields.update(overrides)
        return fields

    def _config(self, task: str, method: str, seed: int, run_dir: Path, **changes: Any) -> TrainConfig:
        fields = {**self._fields(task, method), **changes}
        return TrainConfig.from_dict(
            {**fields, "task": task, "method": method, "seed": seed, "output_dir": str(run_dir)}
        )

    def preset_rates(self) -> dict[str, float]:
        """Each method's preset rate: the grid's centre."""
        rates = {
            m: self.method_overrides.get(m, {}).get("lr", self.train.get("lr")) or _preset_rate(m)
            for m in self.methods
        }
        bad = {
            m: r
            for m, r in rates.items()
            if not isinstance(r, (int, float)) or isinstance(r, bool) or not r > 0
        }
        if bad:
            raise UserInputError(f"preset learning rates must be positive numbers, got {bad}")
        return rates

    def grid_rates(self, method: str) -> list[float]:
        """``method``'s rates, rounded to 3 significant digits (the run folder names them)."""
        preset = self.preset_rates()[method]
        return sorted({float(f"{preset * multiple:.3g}") for multiple in self.lr_grid})

    def grid_dir(self, task: str, method: str, lr: float) -> Path:
        return Path(self.out) / "grid" / slug(task) / slug(method) / f"lr{lr:.3g}" / f"seed{self.seeds[0]}"

    def probe_dir(self, task: str) -> Path:
        return Path(self.out) / PROBE / slug(task)

    def seed_dir(self, task: str, method: str, seed: int, rates: dict[str, float]) -> Path:
        """A seeds-phase run of ``method`` ("A" or "A+B") at the chosen ``rates`` of its parts."""
        *firsts, last = method.split("+")
        rate = f"lr{rates[last]:.3g}" + "".join(f"-{slug(first)}{rates[first]:.3g}" for first in firsts)
        return Path(self.out) / "seeds" / slug(task) / slug(method) / rate / f"seed{seed}"

    # --- the phases -------------------------------------------------------------------------------------

    def phase_runs(
        self, phase: str, selections: dict[tuple[str, str], Selection] | None = None
    ) -> list[RunSpec]:
        """The runs of ``phase``, sorted by key (the order shards are cut from). The seeds phase needs the
        grid's ``selections`` (:meth:`choose_rates`): runs whose rates it lacks are left out. Without selections
        its runs carry the preset rates (for counting and for cutting shards, which depend on keys only)."""
        if phase not in PHASES:
            raise UserInputError(f"unknown phase {phase!r}; use {', '.join(PHASES)} (or all)")
        specs = []
        if phase == "grid":
            for task in self.tasks:
                for method in self.methods:
                    for lr in self.grid_rates(method):
                        run_dir = self.grid_dir(task, method, lr)
                        config = self._config(task, method, self.seeds[0], run_dir, lr=lr)
                        key = f"grid/{slug(task)}/{slug(method)}/lr{lr:.3g}"
                        specs.append(RunSpec(task, method, self.seeds[0], config, name=key))
                if self.probe is not None:
                    fields = {**self._fields(task, PROBE), "method_options": dict(self.probe)}
                    config = TrainConfig.from_dict(
                        {
                            **fields,
                            "task": task,
                            "method": PROBE,
                            "seed": 0,
                            "output_dir": str(self.probe_dir(task)),
                        }
                    )
                    specs.append(RunSpec(task, PROBE, 0, config, kind="probe", name=f"{PROBE}/{slug(task)}"))
        else:
            presets = self.preset_rates()
            rates = {
                (task, method): selections[(task, method)].lr if selections is not None else presets[method]
                for task in self.tasks
                for method in self.methods
                if selections is None or (task, method) in selections
            }  # a run is built only once its rates are known
            for task in self.tasks:
                for method in self.methods:
                    if (task, method) not in rates:
                        continue
                    for seed in self.seeds[1:]:
                        run_dir = self.seed_dir(task, method, seed, {method: rates[(task, method)]})
                        config = self._config(task, method, seed, run_dir, lr=rates[(task, method)])
                        specs.append(
                            RunSpec(
                                task,
                                method,
                                seed,
                                config,
                                name=f"seeds/{slug(task)}/{slug(method)}/seed{seed}",
                            )
                        )
                for combo in self.combos:
                    first, second = combo.split("+")
                    if (task, first) not in rates or (task, second) not in rates:
                        continue
                    for seed in self.seeds:
                        config = self._config(
                            task,
                            combo,
                            seed,
                            self.seed_dir(task, combo, seed, {p: rates[(task, p)] for p in (first, second)}),
                            lr=rates[(task, second)],
                            lr_overrides={self.lr_keys[first]: rates[(task, first)]},
                        )
                        specs.append(
                            RunSpec(
                                task, combo, seed, config, name=f"seeds/{slug(task)}/{slug(combo)}/seed{seed}"
                            )
                        )
        return sorted(specs, key=lambda spec: spec.key)

    def needed_selections(self, specs: list[RunSpec]) -> set[tuple[str, str]]:
        """The (task, method) choices the seeds-phase runs ``specs`` depend on."""
        needed = set()
        for spec in specs:
            needed.update((spec.task, part) for part in spec.method.split("+"))
        return needed

    def choose_rates(
        self, needed: set[tuple[str, str]] | None = None, *, strict: bool = True
    ) -> dict[tuple[str, str], Selection]:
        """The chosen rate of each (task, method) in ``needed`` (default: all), from the grid's results.

        ``strict``: a missing grid run raises :class:`IncompleteGridError` (one line: how many, the first);
        otherwise the (task, method) pairs with a missing grid run are left out."""
        pairs = needed if needed is not None else {(t, m) for t in self.tasks for m in self.methods}
        presets = self.preset_rates()
        selections, missing = {}, []
        for task, method in sorted(pairs):
            scores, dirs = {}, {}
            for lr in self.grid_rates(method):
                run_dir = self.grid_dir(task, method, lr)
                if not is_finished(run_dir):
                    missing.append(run_dir)
                    continue
                result = load_result(run_dir)
                scores[lr] = (
                    result.validation.get(self.select, math.nan),
                    result.validation.get("loss", math.inf),
                )
                dirs[lr] = run_dir
            if len(scores) < len(self.grid_rates(method)):
                continue
            best = max(scores, key=lambda lr: rank_rate(scores[lr], lr, presets[method], self.select))
            selections[(task, method)] = Selection(
                task, method, best, {lr: value for lr, (value, _) in scores.items()}, str(dirs[best])
            )
        if missing and strict:
            raise IncompleteGridError(
                f"the seeds phase needs the finished grid, but {len(missing)} grid run(s) it depends on have no "
                f"result.json (first: {missing[0]}); run the grid phase on every shard first (`--phase grid`)"
            )
        return selections

    def final_runs(self, selections: dict[tuple[str, str], Selection]) -> list[tuple[str, str, int, Path]]:
        """Every (task, method, seed, run folder) of the comparison: methods alone (seed 0 is the grid run at
        the chosen rate), combinations, and the probe; pairs without a selection are left out."""
        runs = []
        for task in self.tasks:
            for method in self.methods:
                if (task, method) not in selections:
                    continue
                chosen = {method: selections[(task, method)].lr}
                runs.append((task, method, self.seeds[0], Path(selections[(task, method)].run_dir)))
                runs += [
                    (task, method, seed, self.seed_dir(task, method, seed, chosen)) for seed in self.seeds[1:]
                ]
            for combo in self.combos:
                if all((task, part) in selections for part in combo.split("+")):
                    chosen = {part: selections[(task, part)].lr for part in combo.split("+")}
                    runs += [
                        (task, combo, seed, self.seed_dir(task, combo, seed, chosen)) for seed in self.seeds
                    ]
            if self.probe is not None:
                runs.append((task, PROBE, 0, self.probe_dir(task)))
        return runs

    def check(self) -> None:
        """What running the sweep needs, before any run starts: tasks, methods and options, the model."""
        from deltaspace.train.preflight import check_method, check_model
        from deltaspace.train.probe import probe_c_grid

        out = Path(self.out)
        if out.exists() and not out.is_dir():
            from deltaspace.errors import RunDirectoryError

            raise RunDirectoryError(f"tuned sweep output {out} is a file; choose another --out")
        specs = self.phase_runs("grid") + self.phase_runs("seeds")
        for model in sorted({spec.config.model for spec in specs}):
            check_model(model)
        for spec in specs:
            if spec.kind == "probe":
                probe_c_grid(spec.config)
            else:
                check_method(spec.method, spec.config.method_options)
        from deltaspace.tasks import load_task

        for task, data_seed in sorted({(spec.task, spec.config.data_seed) for spec in specs}):
            load_task(task, seed=data_seed)


def _preset_rate(method: str) -> float:
    """The rate ``train`` gives ``method`` when none is set (its preset's)."""
    from deltaspace.train.defaults import resolve_rates

    return resolve_rates(TrainConfig(task="-", method=method)).lr


def rank_rate(
    score: tuple[float, float], lr: float, preset: float, metric: str
) -> tuple[float, float, float]:
    """Best validation ``metric`` first; ties: lower validation loss, then the rate nearer the preset."""
    value, loss = score
    value = -math.inf if math.isnan(value) else (-value if metric == "loss" else value)
    return (value, -loss, -abs(math.log(lr / preset)))


def write_selection(config: TunedSweepConfig, selections: dict[tuple[str, str], Selection]) -> Path:
    """``<out>/selection.json``: the chosen rate per task and method and every rate's validation score
    (for people; reports recompute it from the grid). Every shard writes the same content, atomically."""
    from deltaspace.io import write_json_atomic

    path = Path(config.out) / "selection.json"
    write_json_atomic(
        path,
        {
            "select": f"validation {config.select}",
            "chosen": [
                {
                    "task": s.task,
                    "method": s.method,
                    "lr": s.lr,
                    "at_grid_edge": s.at_edge,
                    "validation": {f"{lr:.3g}": value for lr, value in sorted(s.scores.items())},
                }
                for _, s in sorted(selections.items())
            ],
        },
    )
    return path


def run_tuned(
    config: TunedSweepConfig,
    phase: str = "all",
    *,
    shard: tuple[int, int] = (0, 1),
    isolate: bool = False,
    fail_fast: bool = False,
    task_loader: Any = None,
    show: bool = True,
) -> list:
    """Run ``phase`` ("grid", "seeds" or "all": grid then seeds) for this shard; returns the outcomes.

    With several shards, run the grid phase on all of them before the seeds phase (``all`` on a shard runs
    its grid share, then needs the other shards' grid runs; it stops with one line if they are missing)."""
    from deltaspace.train.sweep import print_summary, run_specs, shard_runs

    if phase not in (*PHASES, "all"):
        raise UserInputError(f"unknown phase {phase!r}; use grid, seeds or all")
    outcomes = []
    for name in PHASES if phase == "all" else (phase,):
        mine = shard_runs(config.phase_runs(name), *shard)
        if name == "seeds":
            # The shard is cut from the keys alone; then this shard's runs get their chosen rates.
            selections = config.choose_rates(config.needed_selections(mine))
            everything = {**config.choose_rates(strict=False), **selections}
            write_selection(config, everything)
            keys = {spec.key for spec in mine}
            mine = [spec for spec in config.phase_runs(name, everything) if spec.key in keys]
        done = run_specs(mine, isolate=isolate, fail_fast=fail_fast, task_loader=task_loader)
        if show:
            print_summary(done, shard, what=f"tuned sweep, {name} phase")
        outcomes += done
    return outcomes
