"""Seconds per stage-1 and stage-2 step of the full-suite study (MiniLM-L6, 5 DETs incl. full fine-tuning).

What the subspace stages cost, before and after the changes of the "subspace must hold the solutions"
work, measured on the same machine in one process:

- one member's task loss, forward + backward into θ, with ``vector_to_solution`` built from slices
  (before: each slice's backward allocates a zero tensor of the whole vector) and from ``torch.split``
  (after);
- one stage-1 step as the study ran it before (the paper's random start, one task reconstructed per
  step, the task loss through all 5 DETs, slicing) and as it runs now (all 6 tasks reconstructed every
  step, the task loss through ``members_per_step`` DETs drawn per step, split);
- one stage-2 step (only z trains) per DET, slices and split.

The source deltas are random vectors of each DET's size (a step's cost does not depend on their values);
the batch is 16 real rt_sentiment examples cut at 64 tokens, as in the study. Writes
bench/results/subspace_steps.{json,md}.

    python bench/subspace_steps.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from deltaspace.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
METHODS = ["lora", "adapter", "prefix", "coeff", "full"]
TASKS = 6


def _sliced(model):
    """The former ``vector_to_solution``: named views made by slicing the flat vector."""

    def build(vector: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape in model.parameter_shapes().items():
            out[name] = vector[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        return out

    return build


@contextlib.contextmanager
def slicing(members) -> Iterator[None]:
    """Run the block with every member's model building solutions by slicing (the code before)."""
    saved = [m.model.vector_to_solution for m in members]
    for m in members:
        m.model.vector_to_solution = _sliced(m.model)
    try:
        yield
    finally:
        for m, original in zip(members, saved, strict=True):
            m.model.vector_to_solution = original


def timed(work: Callable[[], None], repeats: int) -> float:
    work()  # warm-up (allocator, first-call paths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members-per-step", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from deltaspace.assets import load_model
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.heads import label_prototypes
    from deltaspace.model import get_delta_model
    from deltaspace.subspace import DeltaModelMember, FitConfig, OptimiseConfig, SolutionStore, TaskBatches
    from deltaspace.tasks.load import load_task

    # the module, not the function of the same name that deltaspace.subspace exports
    fit_module = importlib.import_module("deltaspace.subspace.fit")
    from deltaspace.train.build import build_classifier
    from deltaspace.train.data import cap_examples, make_loader, tokenize_split

    task = load_task("rt_sentiment", seed=0)
    encoder, tokenizer = load_model("minilm-l6", kind="encoder")
    prototypes = label_prototypes(encoder, tokenizer, task.label_names)
    encoded = tokenize_split(
        cap_examples(task.split("train"), 64, seed=0), tokenizer, is_pair=False, max_length=64
    )
    batches = [
        {**dict(b), "prototypes": prototypes}
        for b in make_loader(encoded, tokenizer, batch_size=16, shuffle=False, seed=0)
    ]
    members = []
    for method in METHODS:
        classifier, _ = build_classifier("minilm-l6", task, "prototype", 0)
        members.append(
            DeltaModelMember(method, get_delta_model(classifier, *resolve_method(method, classifier), seed=0))
        )
    generator = torch.Generator().manual_seed(0)
    store = SolutionStore()
    names = [f"t{i}" for i in range(TASKS)]
    for m in members:
        for t in names:
            store.add(m.name, t, 1e-2 * torch.randn(m.theta0.numel(), generator=generator))
    sources = [TaskBatches(t, lambda: batches, batches[:1]) for t in names]

    rows: list[dict] = []

    # 1. task loss forward + backward into θ
    for m in members:
        theta = m.theta0.clone().requires_grad_(True)

        def loss_step(member=m, theta=theta) -> None:
            member.loss(theta, batches[0]).backward()
            theta.grad = None

        with slicing([m]):
            before = timed(loss_step, args.repeats)
        after = timed(loss_step, args.repeats)
        rows.append(
            {
                "what": f"task loss fwd+bwd into θ, {m.name} (D = {m.theta0.numel():,})",
                "before_s": before,
                "after_s": after,
            }
        )

    # 2. stage-1 step: build the projections once, time single steps through fit()'s own step function
    def stage1_seconds(config: FitConfig) -> float:
        config.validate()
        with fit_module.seeded(0):
            ups, downs, deltas, features, _ = fit_module._build_projections(members, store, names, config)
            rng = np.random.default_rng(0)
            streams = {t.name: t.stream() for t in sources}

            def step() -> None:
                weights = fit_module.sample_weights(rng, len(members), config.mixing)
                chosen = fit_module._choose_members(rng, len(members), config.members_per_step)
                fit_module._step(members, ups, downs, deltas, features, names[0], streams[names[0]], weights,
                                 chosen, config, members[0].theta0.device)  # fmt: skip
                for module in [*ups.values(), *downs.values()]:
                    module.zero_grad(set_to_none=True)

            return timed(step, args.repeats)

    old = FitConfig(
        dim=16, init="random", steps=1, recon_all_tasks=False, progress=False, train_encoder_first_layer=True
    )
    new = FitConfig(dim=16, steps=1, members_per_step=args.members_per_step, progress=False)
    with slicing(members):
        before = stage1_seconds(old)
    after = stage1_seconds(new)
    rows.append({
        "what": f"stage-1 step (before: random start, 1 task reconstructed, 5 DETs' task loss; after: closed-form start, "
        f"{TASKS} tasks reconstructed, {args.members_per_step} DETs' task loss)",
        "before_s": before,
        "after_s": after,
    })  # fmt: skip

    # 3. stage-2 step per DET (optimise() with 1 step, no evaluation beyond its fixed start / end ones)
    bundle = fit_module.fit(members, store, None, FitConfig(dim=16, steps=0, task_weight=0.0, progress=False))
    target = TaskBatches("target", lambda: batches, batches[:1])
    config = OptimiseConfig(steps=args.repeats + 1, eval_every=0, optimizer="adamw", progress=False)
    for m in members:
        up = bundle.up(m.name)
        z = torch.zeros(16, requires_grad=True)

        def z_step(member=m, up=up, z=z) -> None:
            member.loss(up(z), batches[0]).backward()
            z.grad = None

        with slicing([m]):
            before = timed(z_step, args.repeats)
        after = timed(z_step, args.repeats)
        rows.append({"what": f"stage-2 step (only z), {m.name}", "before_s": before, "after_s": after})
    del config, target

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    )
    load = os.getloadavg()[0]
    write_json_atomic(
        RESULTS / "subspace_steps.json", {"machine": machine, "load_average_1min": load, "rows": rows}
    )
    lines = [
        "# Subspace stage steps: before and after (MiniLM-L6, 5 DETs, batch 16 × 64 tokens)",
        "",
        f"`python bench/subspace_steps.py --threads {args.threads}` on {machine}; 1-minute load average at the end "
        f"{load:.1f} (other work shared the machine: compare the columns of one row, not absolute seconds "
        "across files). Median of {args.repeats} after a warm-up.".replace(
            "{args.repeats}", str(args.repeats)
        ),
        "",
        "| step | before (s) | after (s) | speed-up |",
        "|---|---|---|---|",
        *(
            f"| {r['what']} | {r['before_s']:.3f} | {r['after_s']:.3f} | {r['before_s'] / r['after_s']:.1f}× |"
            for r in rows
        ),
    ]
    write_text_atomic(RESULTS / "subspace_steps.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
