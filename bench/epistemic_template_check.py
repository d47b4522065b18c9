"""Is epistemic_nli a templated rule? (docs/results.md: only full fine-tuning solves it.)

Its examples are "A <verb> that B <verb> that P" / "A <verb> that P" pairs. This predicts each test label by a
lookup, learned on the train split, of the verbs before "that" in premise and hypothesis (the majority train
label of that verb pattern), and reports the accuracy on the test examples whose pattern was seen.

    python bench/epistemic_template_check.py
"""

from __future__ import annotations

import collections
import re

from deltaspace.tasks import load_task


def pattern(example: dict) -> tuple:
    verbs = lambda text: tuple(re.findall(r"(\w+) that", text))  # noqa: E731
    return verbs(example["text"]), verbs(example["text_pair"])


def main() -> None:
    task = load_task("epistemic_nli", seed=0)
    table: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for example in task.train:
        table[pattern(example)][example["label"]] += 1
    seen = [ex for ex in task.test if pattern(ex) in table]
    right = sum(table[pattern(ex)].most_common(1)[0][0] == ex["label"] for ex in seen)
    majority = collections.Counter(task.train["label"]).most_common(1)[0][0]
    base = sum(ex["label"] == majority for ex in task.test) / len(task.test)
    print(
        f"{len(table)} verb patterns in train; {len(seen)} of {len(task.test)} test examples have a seen pattern; "
        f"lookup accuracy on them {100 * right / len(seen):.1f} % (majority class on the whole test split "
        f"{100 * base:.1f} %)"
    )


if __name__ == "__main__":
    main()
