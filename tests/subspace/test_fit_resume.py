"""Long stage-1 fits: a killed fit resumes to the very bundle of an uninterrupted one, a checkpoint of
another fit is refused, training batches are reshuffled every epoch (the same orders for the same seed)."""

import importlib
import json

import pytest
import torch

from deltaspace.errors import BrokenFileError, RunMismatchError
from deltaspace.rng import seeded
from deltaspace.subspace import FitConfig, TaskBatches, fit
from deltaspace.subspace._fit_checkpoint import CHECKPOINT_FILE
from deltaspace.subspace.batches import shuffled_batches

# dim 4 > 3 source tasks: a trained extra direction beside the closed-form basis; two members a step and
# Dirichlet weights draw from numpy's RNG, the batch order from torch's; at this rate the best validation
# is the start's (step 0), which a resumed fit must carry from its checkpoint
CONFIG = dict(
    dim=4,
    steps=15,
    eval_every=5,
    checkpoint_every=4,
    members_per_step=2,
    optimizer="adamw",
    lr=3e-2,
    progress=False,
    seed=5,
)


class Killed(Exception):
    pass


def _kill_at(step, records=None):
    """An on_step that records, then raises at ``step`` (after the step, before its validation and save)."""

    def on_step(record):
        if records is not None:
            records.append(record)
        if record["step"] == step:
            raise Killed

    return on_step


def _rebatched(task: TaskBatches, batch_size: int) -> TaskBatches:
    """The task with smaller training batches: two a pass, so the resumed fits stop inside later epochs."""
    with seeded(0):
        batches = list(task.train_batches())
    inputs = torch.cat([b["inputs"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    return TaskBatches(
        task.name,
        shuffled_batches(len(inputs), batch_size, lambda i: {"inputs": inputs[i], "labels": labels[i]}),
        task.eval_batches,
        num_labels=task.num_labels,
    )


@pytest.fixture(scope="module")
def sources(toy_study):
    return [_rebatched(task, 128) for task in toy_study.sources]


def _assert_same_bundle(a, b):
    for name in a.members:
        state = a.up(name).state_dict()
        assert state.keys() == b.up(name).state_dict().keys()
        for key, value in state.items():
            assert torch.equal(value, b.up(name).state_dict()[key]), (name, key)
        for task in a.tasks():
            assert torch.equal(a.code(name, task), b.code(name, task)), (name, task)
    assert a.metadata["validation"] == b.metadata["validation"]
    assert (a.metadata["best_step"], a.metadata["best_score"]) == (
        b.metadata["best_step"],
        b.metadata["best_score"],
    )


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_killed_fit_resumes_to_the_bundle_of_an_uninterrupted_one(
    toy_study, sources, tmp_path, monkeypatch
):
    members, store = toy_study.members, toy_study.store
    config = FitConfig(**CONFIG)
    whole = fit(members, store, sources, config, output_dir=tmp_path / "a", log_path=tmp_path / "a.jsonl")
    assert (tmp_path / "a" / CHECKPOINT_FILE).is_file()  # kept beside the bundle, for a longer fit later

    out, log = tmp_path / "b", tmp_path / "b.jsonl"
    with pytest.raises(Killed):  # killed before the first checkpoint: the next call starts afresh
        fit(members, store, sources, config, output_dir=out, log_path=log, on_step=_kill_at(3))
    assert not (out / CHECKPOINT_FILE).exists() and len(_log(log)) == 3
    with pytest.raises(Killed):  # killed during step 10: the last checkpoint is step 8's
        fit(members, store, sources, config, output_dir=out, log_path=log, on_step=_kill_at(10))
    assert (out / CHECKPOINT_FILE).is_file() and [r["step"] for r in _log(log)] == list(range(1, 11))

    fit_module = importlib.import_module("deltaspace.subspace.fit")  # the package's `fit` is the function
    bars, real = [], fit_module.tqdm
    monkeypatch.setattr(
        fit_module, "tqdm", lambda *args, **kwargs: bars.append(kwargs) or real(*args, **kwargs)
    )
    records = []
    with pytest.raises(Killed):  # resumed, then killed again during step 14 (checkpoint: step 12)
        fit(members, store, sources, config, output_dir=out, log_path=log, on_step=_kill_at(14, records))
    assert records[0]["step"] == 9 and bars[-1]["initial"] == 8  # the bar starts where the fit resumes
    # options that do not change the result may change between the calls
    again = FitConfig(**{**CONFIG, "log_every": 3, "checkpoint_every": 5})
    resumed = fit(members, store, sources, again, output_dir=out, log_path=log)
    assert bars[-1]["initial"] == 12

    _assert_same_bundle(whole, resumed)
    assert resumed.metadata["best_step"] == 0
    # called again when finished: nothing left to train, the same bundle at once
    again_log = len(_log(log))
    _assert_same_bundle(whole, fit(members, store, sources, config, output_dir=out, log_path=log))
    assert len(_log(log)) == again_log
    # the log holds each step once, as the uninterrupted fit logged it (bar the time each step took)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _log(log)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _log(tmp_path / "a.jsonl")]
    assert all(r["seconds"] > 0 for r in _log(log))
    assert resumed.metadata["wall_seconds"] > 0


def test_a_finished_fit_extended_ends_where_a_longer_fit_would(toy_study, sources, tmp_path):
    members, store = toy_study.members, toy_study.store
    longer = fit(members, store, sources, FitConfig(**{**CONFIG, "steps": 20}), output_dir=tmp_path / "a")

    out, log = tmp_path / "b", tmp_path / "b.jsonl"
    short = fit(members, store, sources, FitConfig(**{**CONFIG, "steps": 10}), output_dir=out, log_path=log)
    assert short.metadata["steps_run"] == 10
    extended = fit(
        members, store, sources, FitConfig(**{**CONFIG, "steps": 20}), output_dir=out, log_path=log
    )
    _assert_same_bundle(longer, extended)
    assert extended.metadata["steps_run"] == 20 and [r["step"] for r in _log(log)] == list(range(1, 21))
    # a checkpoint written when the identity still held the steps of a constant-schedule fit: extended too
    from deltaspace.subspace._fit_checkpoint import differences, fit_identity

    deltas = {m.name: {t.name: store.delta(m.name, t.name) for t in sources} for m in members}
    names = [t.name for t in sources]
    current = fit_identity(FitConfig(**{**CONFIG, "steps": 20}).to_dict(), names, deltas)
    written = {**current, "config": {**current["config"], "steps": 10}}
    assert differences(written, current) == []
    # asked for fewer steps than the checkpoint holds: refused, nothing rewritten
    with pytest.raises(RunMismatchError, match="past this fit's steps"):
        fit(members, store, sources, FitConfig(**{**CONFIG, "steps": 12}), output_dir=out)
    # a schedule that depends on the total length cannot be extended: its steps are part of the identity
    cosine = {**CONFIG, "schedule": "cosine"}
    fit(members, store, sources, FitConfig(**{**cosine, "steps": 10}), output_dir=tmp_path / "c")
    with pytest.raises(RunMismatchError, match=r"config\.steps"):
        fit(members, store, sources, FitConfig(**{**cosine, "steps": 20}), output_dir=tmp_path / "c")


def test_a_checkpoint_of_another_fit_is_refused(toy_study, sources, tmp_path):
    members, store = toy_study.members, toy_study.store
    out = tmp_path / "fit"
    with pytest.raises(Killed):
        fit(members, store, sources, FitConfig(**CONFIG), output_dir=out, on_step=_kill_at(5))
    with pytest.raises(RunMismatchError, match=r"config\.lr.*delete it to start this fit afresh"):
        fit(members, store, sources, FitConfig(**{**CONFIG, "lr": 2e-3}), output_dir=out)
    with pytest.raises(RunMismatchError, match="source tasks"):
        fit(members, store, sources[:2], FitConfig(**CONFIG), output_dir=out)
    with pytest.raises(RunMismatchError, match="members"):
        fit(members[:2], store, sources, FitConfig(**CONFIG), output_dir=out)
    (out / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(BrokenFileError, match="delete it"):
        fit(members, store, sources, FitConfig(**CONFIG), output_dir=out)
    # checkpoint_every: 0 keeps none, so it neither reads nor replaces the file
    config = FitConfig(**{**CONFIG, "checkpoint_every": 0, "steps": 2})
    fit(members, store, sources, config, output_dir=out)
    assert (out / CHECKPOINT_FILE).read_bytes() == b"not a checkpoint"


def test_training_batches_are_reshuffled_every_epoch_and_repeat_with_the_seed():
    x, y = torch.arange(12.0)[:, None], torch.arange(12)
    task = TaskBatches.from_tensors("t", x, y, batch_size=4, eval_inputs=x, eval_labels=y)

    def epochs(count, seed):
        with seeded(seed):
            stream = task.stream()
            batches = [next(stream)["labels"] for _ in range(3 * count)]
        assert stream.epoch == count - 1
        return [torch.cat(batches[3 * i : 3 * i + 3]).tolist() for i in range(count)]

    first = epochs(3, seed=0)
    assert all(sorted(order) == list(range(12)) for order in first)  # each epoch is one pass over the data
    assert len({tuple(order) for order in first}) == 3  # a new order every epoch
    assert epochs(3, seed=0) == first and epochs(3, seed=1) != first


def test_a_stream_restored_from_its_state_continues_with_the_same_batches():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    task = TaskBatches.from_tensors("t", x, y, batch_size=4, eval_inputs=x, eval_labels=y)  # 3 a pass
    for taken in (2, 3, 4):  # inside the first epoch, at its end, inside the second
        with seeded(0):
            stream = task.stream()
            for _ in range(taken):
                next(stream)
            state, rng = stream.state_dict(), torch.get_rng_state()
            expected = [next(stream)["labels"].tolist() for _ in range(5)]
        restored = task.stream()
        with seeded(123):
            before = torch.get_rng_state()
            restored.load_state_dict(state)
            assert torch.equal(before, torch.get_rng_state())  # replaying the epoch leaves the RNG alone
            torch.set_rng_state(rng)  # as the fit restores torch's RNG from its checkpoint
            assert [next(restored)["labels"].tolist() for _ in range(5)] == expected, taken


def test_validation_at_the_centroid_only(toy_study):
    config = FitConfig(**{**CONFIG, "steps": 2, "eval_every": 2, "eval_centroid_only": True})
    bundle = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    for check in bundle.metadata["validation"]:
        assert set(check["metrics"]["src0"]) == {"centroid"}
        assert set(check["metrics"]["src0"]["centroid"]) == {"linear", "lowrank", "features"}
