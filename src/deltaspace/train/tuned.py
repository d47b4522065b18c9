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

**Combination tuning** (opt-in, ``combo_tuning:``; issue 20 item 1). Without it a combination A+B gets each part's
rate as chosen alone. With it, each A+B is tuned as a whole, B (X) staying at its own chosen rate, in two more
phases between the grid and the seeds (each a barrier like the grid: run it on every shard before the next)::

    combo_lr      per task and combination, A's parameters (ΔC, through ``lr_keys``) at each of ``rates``:
                  ``one_rate`` = B's chosen rate, i.e. one rate for every parameter (the paper's protocol), and
                  multiples of A's own chosen rate on that task; A's ``option`` at its default value (the
                  combination's ``method_options``, else the preset's, e.g. coeff_dropout 0.2); seed
                  ``seeds[0]``, into <out>/combo_grid/<task>/<A+B>/lr<B>-<A><rate>-<option><value>/seed<s>/
    combo_option  at the rate chosen on validation, every other value of ``option`` (e.g. coeff_dropout 0, 0.1,
                  0.3), into the same folders; then the value is chosen on validation

Both choices use the grid's rule (best validation ``select``; ties: lower validation loss, then the rate
nearer A's own chosen rate, the value nearer the default). One stage after the other, not the product:
rates x values costs (4 x 4 =) 16 runs per task and combination against 4 + 3 = 7, and the coefficient
dropout matters less than the rate (reference notes: 75.1-77.7 over p in 0-0.2 on VL-BART, while a bad rate
collapses runs). A rate listed twice (B's rate is also a multiple of A's) is run once. The seeds phase then
runs the chosen configuration for the other seeds (seed ``seeds[0]`` is its combo-grid run) into
<out>/seeds/<task>/<A+B>/lr<B>-<A><rate>-<option><value>/seed<k>/: a folder names every choice, so a choice
that changes makes new runs, never a settings mismatch. ``<out>/combo_selection.json`` lists the choices.
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

PHASES = ("grid", "combo_lr", "combo_option", "seeds")  # the combo phases have no runs without combo_tuning
COMBO_PHASES = ("combo_lr", "combo_option")
ONE_RATE = "one_rate"  # in combo_tuning rates: A's parameters at B's chosen rate (one rate for everything)
_COMBO_EXAMPLE = "{rates: [one_rate, 0.316, 1.0, 3.16], option: {coeff_dropout: [0.0, 0.1, 0.2, 0.3]}}"
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
    "combo_tuning",
)
_RESERVED = ("task", "method", "seed", "output_dir", "lr", "lr_overrides")


class IncompleteGridError(UserInputError):
    """A phase was started before the runs it depends on (the grid's, a combo phase's) had finished."""


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


def _is_number(value: Any, *, above_zero: bool) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > 0 if above_zero else value >= 0


def _distinct_list(values: Any, valid: Any) -> bool:
    """A non-empty list of distinct values, each ``valid``."""
    return (
        isinstance(values, list)
        and bool(values)
        and len(set(values)) == len(values)
        and all(valid(value) for value in values)
    )


@dataclasses.dataclass(frozen=True)
class ComboTuning:
    """``combo_tuning:`` (see the module docstring): A's rates in A+B (``one_rate`` or multiples of A's own
    chosen rate) and, optionally, one option of A (``option``) with its ``values``."""

    rates: tuple[float | str, ...]
    option: str | None = None
    values: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> ComboTuning:
        """Parse the config's mapping; every problem is one line naming the fix."""
        if not isinstance(data, dict):
            raise UserInputError(f"combo_tuning must be a mapping like {_COMBO_EXAMPLE}, got {data!r}")
        unknown = sorted(set(data) - {"rates", "option"})
        if unknown:
            raise UserInputError(
                f"combo_tuning has unknown key(s) {unknown}; valid keys: rates, option (e.g. {_COMBO_EXAMPLE})"
            )
        rates = data.get("rates")
        if not _distinct_list(rates, lambda rate: rate == ONE_RATE or _is_number(rate, above_zero=True)):
            raise UserInputError(
                f"combo_tuning rates must list distinct entries, each {ONE_RATE!r} (A's parameters at B's chosen "
                f"rate) or a positive multiple of A's own chosen rate, e.g. [one_rate, 0.316, 1.0, 3.16]; got {rates!r}"
            )
        option = data.get("option") or {}
        if (
            not isinstance(option, dict)
            or len(option) > 1
            or not all(_distinct_list(v, lambda x: _is_number(x, above_zero=False)) for v in option.values())
        ):
            raise UserInputError(
                "combo_tuning option must name one numeric option of the combinations' first part with its "
                f"distinct values, e.g. {{coeff_dropout: [0.0, 0.1, 0.2, 0.3]}}; got {option!r}"
            )
        ((name, values),) = option.items() if option else ((None, []),)
        return cls(tuple(rates), name, tuple(float(v) for v in values))

    def key_label(self, rate: float | str) -> str:
        """``one_rate``, or ``x0.316`` for a multiple: a rate's name in run keys (independent of the choices)."""
        return ONE_RATE if rate == ONE_RATE else f"x{rate:g}"


@dataclasses.dataclass(frozen=True)
class ComboChoice:
    """The configuration chosen for one (task, A+B) by the combo phases, and the validation score of each
    candidate. ``lr``: B's chosen rate (the run's base rate); ``first_lr``: A's parameters' rate; ``value``:
    A's ``option`` (None without one); ``own_lr``: A's own chosen rate alone; ``run_dir``: the seed-0 run."""

    task: str
    combo: str
    lr: float
    first_lr: float
    own_lr: float
    option: str | None
    value: float | None
    rate_scores: dict[float, float]
    option_scores: dict[float, float]
    run_dir: str

    @property
    def one_rate(self) -> bool:
        """True when A's parameters train at B's rate: one rate for everything, as the paper did."""
        return self.first_lr == self.lr

    @property
    def rates(self) -> dict[str, float]:
        """The rate of each part, as the run folders name them."""
        first, second = self.combo.split("+")
        return {first: self.first_lr, second: self.lr}

    @property
    def rate_label(self) -> str:
        """``one rate``, or the multiple of A's own chosen rate (``×1``: the rate A chose alone)."""
        return "one rate" if self.one_rate else f"×{self.first_lr / self.own_lr:.3g}"


@dataclasses.dataclass
class TunedSweepConfig:
    """What the tuned sweep runs (see the module docstring); ``train`` / ``method_overrides`` /
    ``task_overrides`` are :class:`~deltaspace.train.sweep.SweepConfig`'s. A method's preset rate (the grid's
    centre) is its ``method_overrides`` ``lr``, else ``train.lr``, else the preset's rate. ``probe``: the same-budget probe's
    options (``{C: [...]}``), or ``None`` for no probe. ``lr_keys`` maps the first part A of a combination
    to the parameter-name substring that gets A's rate. ``combo_tuning``: tune each combination as a whole
    (:class:`ComboTuning`; None: each part at its rate chosen alone)."""

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
    combo_tuning: ComboTuning | dict[str, Any] | None = None

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
        if self.combo_tuning is not None:
            self._check_combo_tuning()
        # Build every config now, so a bad setting fails before the first run starts.
        for phase in PHASES:
            self.phase_runs(phase)
        self.preset_rates()

    def _check_combo_tuning(self) -> None:
        if not isinstance(self.combo_tuning, ComboTuning):
            self.combo_tuning = ComboTuning.from_dict(self.combo_tuning)
        if not self.combos:
            raise UserInputError(
                "combo_tuning tunes the combinations, but combos is empty; add combos (e.g. [coeff+lora]) or "
                "drop combo_tuning"
            )
        option = self.combo_tuning.option
        if option is None:
            return
        for combo in self.combos:
            first = combo.split("+")[0]
            _preset_option(first, option)  # raises when A has no such option
            for task in self.tasks:
                scoped = [
                    key
                    for key in self._fields(task, combo).get("method_options", {})
                    if key in (f"{first}.{option}", f"{first}__{option}")
                ]
                if scoped:
                    raise UserInputError(
                        f"method_options set {scoped[0]!r}, which would override the tuned {option!r}; "
                        f"write it as {option!r} (its default while the rate is tuned)"
                    )

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
        narrowed = overrides.get("methods") is not None or overrides.get("combos") is not None
        if narrowed and not data.get("combos"):
            data.pop("combo_tuning", None)  # no combination left: nothing to tune
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

    def seed_dir(
        self,
        task: str,
        method: str,
        seed: int,
        rates: dict[str, float],
        option: tuple[str, float] | None = None,
    ) -> Path:
        """A seeds-phase run of ``method`` ("A" or "A+B") at the chosen ``rates`` of its parts (and, under
        combination tuning, A's chosen ``option``: (name, value))."""
        return self._run_dir("seeds", task, method, seed, rates, option)

    def combo_dir(self, task: str, combo: str, rates: dict[str, float], value: float | None) -> Path:
        """A combo-grid run (seed ``seeds[0]``) of ``combo`` at its parts' ``rates`` and A's option ``value``."""
        return self._run_dir("combo_grid", task, combo, self.seeds[0], rates, self._option(value))

    def _option(self, value: float | None) -> tuple[str, float] | None:
        option = self.combo_tuning.option if self.combo_tuning is not None else None
        return None if option is None or value is None else (option, value)

    def _run_dir(
        self,
        stage: str,
        task: str,
        method: str,
        seed: int,
        rates: dict[str, float],
        option: tuple[str, float] | None,
    ) -> Path:
        # The folder names every choice, so a changed choice makes new runs, never a settings mismatch.
        *firsts, last = method.split("+")
        name = f"lr{rates[last]:.3g}" + "".join(f"-{slug(first)}{rates[first]:.3g}" for first in firsts)
        if option is not None:
            name += f"-{slug(option[0])}{option[1]:g}"
        return Path(self.out) / stage / slug(task) / slug(method) / name / f"seed{seed}"

    # --- combinations -----------------------------------------------------------------------------------

    def _part_rates(
        self, task: str, combo: str, selections: dict[tuple[str, str], Selection] | None
    ) -> dict[str, float] | None:
        """Each part's rate chosen alone (the presets' without ``selections``: for counting and cutting
        shards); None while a part has no choice yet."""
        parts = combo.split("+")
        if selections is None:
            presets = self.preset_rates()
            return {part: presets[part] for part in parts}
        if any((task, part) not in selections for part in parts):
            return None
        return {part: selections[(task, part)].lr for part in parts}

    def option_default(self, task: str, combo: str) -> float | None:
        """A's tuned option while its rate is tuned: the combination's ``method_options``, else the preset's."""
        option = self.combo_tuning.option if self.combo_tuning is not None else None
        if option is None:
            return None
        options = self._fields(task, combo).get("method_options", {})
        return float(options[option] if option in options else _preset_option(combo.split("+")[0], option))

    def combo_rates(
        self, combo: str, rates: dict[str, float], *, distinct: bool = True
    ) -> list[tuple[str, float]]:
        """A's rates tried in ``combo`` given the parts' chosen ``rates``: (key label, rate). ``distinct``: a rate
        listed twice (B's rate is also a multiple of A's) is kept once, under its first label."""
        first, second = combo.split("+")
        candidates = [
            (
                self.combo_tuning.key_label(rate),
                rates[second] if rate == ONE_RATE else float(f"{rates[first] * rate:.3g}"),
            )
            for rate in self.combo_tuning.rates
        ]
        if not distinct:
            return candidates
        labels: dict[float, str] = {}
        for label, rate in candidates:
            labels.setdefault(rate, label)
        return [(label, rate) for rate, label in labels.items()]

    def _combo_spec(
        self,
        stage: str,
        task: str,
        combo: str,
        seed: int,
        rates: dict[str, float],
        value: float | None,
        key: str,
    ) -> RunSpec:
        """``combo`` at B's rate with A's parameters at theirs (``lr_overrides``) and A's option ``value``."""
        first, second = combo.split("+")
        changes: dict[str, Any] = {"lr": rates[second], "lr_overrides": {self.lr_keys[first]: rates[first]}}
        if value is not None:
            options = self._fields(task, combo).get("method_options", {})
            changes["method_options"] = {**options, self.combo_tuning.option: value}
        run_dir = self._run_dir(stage, task, combo, seed, rates, self._option(value))
        return RunSpec(task, combo, seed, self._config(task, combo, seed, run_dir, **changes), name=key)

    # --- the phases -------------------------------------------------------------------------------------

    def phase_runs(
        self,
        phase: str,
        selections: dict[tuple[str, str], Selection] | None = None,
        *,
        combo_rates: dict[tuple[str, str], Selection] | None = None,
        combos: dict[tuple[str, str], ComboChoice] | None = None,
    ) -> list[RunSpec]:
        """The runs of ``phase``, sorted by key (the order shards are cut from). Every phase after the grid needs
        the grid's ``selections`` (:meth:`choose_rates`); combo_option also ``combo_rates``
        (:meth:`choose_combo_rates`), and the seeds phase under combination tuning ``combos``
        (:meth:`choose_combos`): runs whose choices are missing are left out. Without selections the runs
        carry the preset rates and default values (for counting and for cutting shards, which depend on keys
        only). Without ``combo_tuning`` the combo phases have no runs."""
        if phase not in PHASES:
            raise UserInputError(f"unknown phase {phase!r}; use {', '.join(PHASES)} (or all)")
        if phase == "grid":
            specs = self._grid_runs()
        elif phase == "combo_lr":
            specs = self._combo_lr_runs(selections)
        elif phase == "combo_option":
            specs = self._combo_option_runs(selections, combo_rates)
        else:
            specs = self._seed_runs(selections, combos)
        return sorted(specs, key=lambda spec: spec.key)

    def _grid_runs(self) -> list[RunSpec]:
        specs = []
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
        return specs

    def _combo_lr_runs(self, selections: dict[tuple[str, str], Selection] | None) -> list[RunSpec]:
        if self.combo_tuning is None:
            return []
        specs = []
        for task in self.tasks:
            for combo in self.combos:
                rates = self._part_rates(task, combo, selections)
                if rates is None:
                    continue
                first = combo.split("+")[0]
                value = self.option_default(task, combo)
                # Keys name the rate's label, not its value: shards are cut before the choices are known.
                for label, rate in self.combo_rates(combo, rates, distinct=selections is not None):
                    key = f"combo_lr/{slug(task)}/{slug(combo)}/{label}"
                    specs.append(
                        self._combo_spec(
                            "combo_grid", task, combo, self.seeds[0], {**rates, first: rate}, value, key
                        )
                    )
        return specs

    def _combo_option_runs(
        self,
        selections: dict[tuple[str, str], Selection] | None,
        combo_rates: dict[tuple[str, str], Selection] | None,
    ) -> list[RunSpec]:
        if self.combo_tuning is None or self.combo_tuning.option is None:
            return []
        option = self.combo_tuning.option
        specs = []
        for task in self.tasks:
            for combo in self.combos:
                rates = self._part_rates(task, combo, selections)
                known = selections is None or (combo_rates is not None and (task, combo) in combo_rates)
                if rates is None or not known:  # A's rate in the combination is not chosen yet
                    continue
                first = combo.split("+")[0]
                if selections is not None:
                    rates[first] = combo_rates[(task, combo)].lr
                default = self.option_default(task, combo)
                for value in self.combo_tuning.values:
                    if value == default:  # that run is the combo_lr phase's at the chosen rate
                        continue
                    key = f"combo_option/{slug(task)}/{slug(combo)}/{slug(option)}{value:g}"
                    specs.append(
                        self._combo_spec("combo_grid", task, combo, self.seeds[0], rates, value, key)
                    )
        return specs

    def _seed_runs(
        self,
        selections: dict[tuple[str, str], Selection] | None,
        combos: dict[tuple[str, str], ComboChoice] | None,
    ) -> list[RunSpec]:
        presets = self.preset_rates()
        rates = {
            (task, method): selections[(task, method)].lr if selections is not None else presets[method]
            for task in self.tasks
            for method in self.methods
            if selections is None or (task, method) in selections
        }  # a run is built only once its rates are known
        specs = []
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
                specs += self._combo_seed_runs(task, combo, selections, combos)
        return specs

    def _combo_seed_runs(
        self,
        task: str,
        combo: str,
        selections: dict[tuple[str, str], Selection] | None,
        combos: dict[tuple[str, str], ComboChoice] | None,
    ) -> list[RunSpec]:
        """The seeds-phase runs of ``combo``: every seed at the parts' own rates, or, under combination
        tuning, the seeds after the first at the chosen configuration (its first seed is the combo-grid run)."""
        rates = self._part_rates(task, combo, selections)
        if rates is None:
            return []
        seeds, value = self.seeds, None
        if self.combo_tuning is not None:
            seeds, value = self.seeds[1:], self.option_default(task, combo)
            if combos is not None:
                if (task, combo) not in combos:
                    return []
                rates, value = combos[(task, combo)].rates, combos[(task, combo)].value
            elif selections is not None:
                return []  # the combination's choice is not known yet
        return [
            self._combo_spec(
                "seeds", task, combo, seed, rates, value, f"seeds/{slug(task)}/{slug(combo)}/seed{seed}"
            )
            for seed in seeds
        ]

    def needed_selections(self, specs: list[RunSpec]) -> set[tuple[str, str]]:
        """The (task, method) choices the runs ``specs`` of a later phase depend on."""
        needed = set()
        for spec in specs:
            needed.update((spec.task, part) for part in spec.method.split("+"))
        return needed

    def _score(self, run_dir: Path) -> tuple[float, float] | None:
        """(validation ``select``, validation loss) of a finished run; None while it has not finished."""
        if not is_finished(run_dir):
            return None
        result = load_result(run_dir)
        return result.validation.get(self.select, math.nan), result.validation.get("loss", math.inf)

    def _best(
        self, dirs: dict[Any, Path], distance: Any, missing: list[Path]
    ) -> tuple[Any, dict[Any, float]] | None:
        """The candidate (a key of ``dirs``) whose run ranks first (:func:`rank_score`, ties broken by the
        smaller ``distance(key)``) and each candidate's score; None, with the unfinished runs added to
        ``missing``, until every run has finished."""
        scores = {}
        for key, run_dir in dirs.items():
            score = self._score(run_dir)
            if score is None:
                missing.append(run_dir)
            else:
                scores[key] = score
        if len(scores) < len(dirs):
            return None
        best = max(scores, key=lambda key: rank_score(scores[key], self.select, distance(key)))
        return best, {key: value for key, (value, _) in scores.items()}

    def choose_rates(
        self, needed: set[tuple[str, str]] | None = None, *, strict: bool = True, phase: str = "seeds"
    ) -> dict[tuple[str, str], Selection]:
        """The chosen rate of each (task, method) in ``needed`` (default: all), from the grid's results.

        ``strict``: a missing grid run raises :class:`IncompleteGridError` (one line: how many, the first,
        naming ``phase`` as the one waiting); otherwise the (task, method) pairs with a missing grid run are
        left out."""
        pairs = needed if needed is not None else {(t, m) for t in self.tasks for m in self.methods}
        presets = self.preset_rates()
        selections, missing = {}, []
        for task, method in sorted(pairs):
            dirs = {lr: self.grid_dir(task, method, lr) for lr in self.grid_rates(method)}
            best = self._best(dirs, lambda lr, method=method: abs(math.log(lr / presets[method])), missing)
            if best is not None:
                selections[(task, method)] = Selection(task, method, best[0], best[1], str(dirs[best[0]]))
        _raise_missing(missing, strict, phase, "grid")
        return selections

    def choose_combo_rates(
        self,
        selections: dict[tuple[str, str], Selection],
        needed: set[tuple[str, str]] | None = None,
        *,
        strict: bool = True,
        phase: str = "combo_option",
    ) -> dict[tuple[str, str], Selection]:
        """A's rate chosen for each (task, A+B) in ``needed`` (default: all) from its combo_lr runs, as a
        :class:`Selection` whose ``method`` is the combination and ``lr`` A's rate (ties: nearer A's own
        chosen rate). Pairs whose parts have no grid choice in ``selections`` are left out; a missing
        combo_lr run raises :class:`IncompleteGridError` when ``strict``, else leaves its pair out."""
        if self.combo_tuning is None:
            return {}
        pairs = needed if needed is not None else {(t, c) for t in self.tasks for c in self.combos}
        chosen, missing = {}, []
        for task, combo in sorted(pairs):
            rates = self._part_rates(task, combo, selections)
            if rates is None:
                continue
            first = combo.split("+")[0]
            value = self.option_default(task, combo)
            dirs = {
                rate: self.combo_dir(task, combo, {**rates, first: rate}, value)
                for _, rate in self.combo_rates(combo, rates)
            }
            best = self._best(dirs, lambda rate, own=rates[first]: abs(math.log(rate / own)), missing)
            if best is not None:
                chosen[(task, combo)] = Selection(task, combo, best[0], best[1], str(dirs[best[0]]))
        _raise_missing(missing, strict, phase, "combo_lr")
        return chosen

    def choose_combos(
        self,
        selections: dict[tuple[str, str], Selection],
        combo_rates: dict[tuple[str, str], Selection],
        needed: set[tuple[str, str]] | None = None,
        *,
        strict: bool = True,
        phase: str = "seeds",
    ) -> dict[tuple[str, str], ComboChoice]:
        """The configuration chosen for each (task, A+B) in ``needed`` (default: every pair of ``combo_rates``):
        A's option value at A's chosen rate (:meth:`choose_combo_rates`), from the combo_option runs and the
        combo_lr run at that rate (the default value's; ties: the value nearer the default). Missing runs:
        as :meth:`choose_combo_rates`."""
        if self.combo_tuning is None:
            return {}
        pairs = needed if needed is not None else set(combo_rates)
        chosen, missing = {}, []
        for task, combo in sorted(pairs):
            rates = self._part_rates(task, combo, selections)
            if rates is None or (task, combo) not in combo_rates:
                continue
            first = combo.split("+")[0]
            own, rated = rates[first], combo_rates[(task, combo)]
            rates[first] = rated.lr
            default = self.option_default(task, combo)
            values = (
                [default]
                if default is None
                else [default, *(v for v in self.combo_tuning.values if v != default)]
            )
            dirs = {value: self.combo_dir(task, combo, rates, value) for value in values}
            best = self._best(
                dirs, lambda value, default=default: 0.0 if value is None else abs(value - default), missing
            )
            if best is not None:
                value, scores = best
                chosen[(task, combo)] = ComboChoice(
                    task=task,
                    combo=combo,
                    lr=rates[combo.split("+")[1]],
                    first_lr=rated.lr,
                    own_lr=own,
                    option=self.combo_tuning.option,
                    value=value,
                    rate_scores=rated.scores,
                    option_scores=scores if default is not None else {},
                    run_dir=str(dirs[value]),
                )
        _raise_missing(missing, strict, phase, "combo_option")
        return chosen

    def final_runs(self, selections: dict[tuple[str, str], Selection]) -> list[tuple[str, str, int, Path]]:
        """Every (task, method, seed, run folder) of the comparison: methods alone (seed 0 is the grid run at
        the chosen rate), combinations (under combination tuning at the chosen configuration, seed 0 being its
        combo-grid run), and the probe; pairs without a selection are left out."""
        combos = {}
        if self.combo_tuning is not None:
            combo_rates = self.choose_combo_rates(selections, strict=False)
            combos = self.choose_combos(selections, combo_rates, strict=False)
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
                if (task, combo) in combos:
                    choice = combos[(task, combo)]
                    option = self._option(choice.value)
                    runs.append((task, combo, self.seeds[0], Path(choice.run_dir)))
                    runs += [
                        (task, combo, seed, self.seed_dir(task, combo, seed, choice.rates, option))
                        for seed in self.seeds[1:]
                    ]
                elif self.combo_tuning is None and all(
                    (task, part) in selections for part in combo.split("+")
                ):
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
        specs = [spec for phase in PHASES for spec in self.phase_runs(phase)]
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


def _preset_option(method: str, option: str) -> Any:
    """The value preset ``method`` gives ``option`` (its options, else its config's default)."""
    from deltaspace.deltas.registry import presets

    preset = presets().get(method)
    if preset is None:
        raise UserInputError(f"unknown delta method {method!r} in combos")
    if option in preset.options:
        return preset.options[option]
    fields = {f.name: f for f in dataclasses.fields(preset.config_class) if f.init}
    if option not in fields or fields[option].default is dataclasses.MISSING:
        numeric = sorted(
            n
            for n, f in fields.items()
            if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)
        )
        raise UserInputError(
            f"combo_tuning option {option!r} is not a numeric option of {method!r} with a default; "
            f"its numeric options: {', '.join(numeric) or 'none'}"
        )
    return fields[option].default


def _raise_missing(missing: list[Path], strict: bool, phase: str, needs: str) -> None:
    """One line when ``phase`` was started before the ``needs`` runs it depends on had finished."""
    if missing and strict:
        what = "grid" if needs == "grid" else f"{needs} phase"
        raise IncompleteGridError(
            f"the {phase} phase needs the finished {what}, but {len(missing)} {needs} run(s) it depends on have "
            f"no result.json (first: {missing[0]}); run the {needs} phase on every shard first (`--phase {needs}`)"
        )


def rank_score(score: tuple[float, float], metric: str, distance: float) -> tuple[float, float, float]:
    """Best validation ``metric`` first; ties: lower validation loss, then the smaller ``distance`` (from the
    preset, the default)."""
    value, loss = score
    value = -math.inf if math.isnan(value) else (-value if metric == "loss" else value)
    return (value, -loss, -distance)


def rank_rate(
    score: tuple[float, float], lr: float, preset: float, metric: str
) -> tuple[float, float, float]:
    """Best validation ``metric`` first; ties: lower validation loss, then the rate nearer the preset."""
    return rank_score(score, metric, abs(math.log(lr / preset)))


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


def write_combo_selection(config: TunedSweepConfig, combos: dict[tuple[str, str], ComboChoice]) -> Path:
    """``<out>/combo_selection.json``: per task and combination, A's rate and option value chosen and every
    candidate's validation score (for people; reports recompute it). Its own file, so a sweep sharing the
    folder without combination tuning never overwrites it."""
    from deltaspace.io import write_json_atomic

    path = Path(config.out) / "combo_selection.json"
    write_json_atomic(
        path,
        {
            "select": f"validation {config.select}",
            "chosen": [
                {
                    "task": c.task,
                    "combo": c.combo,
                    "lr": c.lr,
                    "first_lr": c.first_lr,
                    "own_lr": c.own_lr,
                    "rate": c.rate_label,
                    c.option or "option": c.value,
                    "validation_by_rate": {f"{r:.3g}": v for r, v in sorted(c.rate_scores.items())},
                    "validation_by_option": {f"{v:g}": s for v, s in sorted(c.option_scores.items())},
                }
                for _, c in sorted(combos.items())
            ],
        },
    )
    return path


def _resolve(config: TunedSweepConfig, phase: str, mine: list[RunSpec]) -> list[RunSpec]:
    """This shard's runs of a phase after the grid (cut from the keys alone), with their chosen rates and
    values; one line when a run they depend on has not finished. Writes the choices so far for people."""
    selections = config.choose_rates(config.needed_selections(mine), phase=phase)
    everything = {**config.choose_rates(strict=False), **selections}
    write_selection(config, everything)
    combo_rates = combos = None
    if config.combo_tuning is not None and phase in ("combo_option", "seeds"):
        pairs = {(spec.task, spec.method) for spec in mine if spec.method in config.combos}
        combo_rates = config.choose_combo_rates(everything, pairs, phase=phase)
        if phase == "seeds":
            combos = config.choose_combos(everything, combo_rates, pairs, phase=phase)
        every_rate = {**config.choose_combo_rates(everything, strict=False), **combo_rates}
        write_combo_selection(config, config.choose_combos(everything, every_rate, strict=False))
    keys = {spec.key for spec in mine}
    resolved = config.phase_runs(phase, everything, combo_rates=combo_rates, combos=combos)
    return [spec for spec in resolved if spec.key in keys]


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
    """Run ``phase`` (one of :data:`PHASES`, or "all": each in turn) for this shard; returns the outcomes.

    With several shards, run each phase on all of them before the next (``all`` on a shard runs its share of
    a phase, then needs the other shards' runs of it; it stops with one line if they are missing). Without
    ``combo_tuning`` the combo phases have no runs: grid, then seeds."""
    from deltaspace.train.sweep import print_summary, run_specs, shard_runs

    if phase not in (*PHASES, "all"):
        raise UserInputError(f"unknown phase {phase!r}; use {', '.join(PHASES)} or all")
    if phase in COMBO_PHASES and config.combo_tuning is None:
        raise UserInputError(
            f"phase {phase} tunes the combinations as a whole and this config has no combo_tuning; add it "
            f"(e.g. combo_tuning: {_COMBO_EXAMPLE}) or run --phase grid, then seeds"
        )
    outcomes = []
    for name in PHASES if phase == "all" else (phase,):
        if name in COMBO_PHASES and config.combo_tuning is None:
            continue
        mine = shard_runs(config.phase_runs(name), *shard)
        if name != "grid":
            mine = _resolve(config, name, mine)
        done = run_specs(mine, isolate=isolate, fail_fast=fail_fast, task_loader=task_loader)
        if show:
            print_summary(done, shard, what=f"tuned sweep, {name} phase")
        outcomes += done
    return outcomes
