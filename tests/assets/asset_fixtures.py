"""Small fixtures built on the fly: fake package archives, specs pointing at them, tiny models."""

from __future__ import annotations

import hashlib
import io
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


def spec_for(
    path: Path, members: tuple[str, ...], *, name: str = "fakepkg", version: str = "1.0"
) -> PackageSpec:
    data = path.read_bytes()
    return PackageSpec(
        name=name,
        version=version,
        dist="sdist" if path.name.endswith(".tar.gz") else "wheel",
        filename=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        members=members,
    )


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
