"""Python packages an optional asset needs at fetch time, installed by ``deltaspace fetch --with <extra>``.

SmolLM2 ships as a GGUF file; transformers dequantises it only with the ``gguf`` package, which deltaspace
does not need otherwise (it is the ``deltaspace[smollm2]`` extra). A newcomer asking for the model should
not have to learn that from a failed conversion, so ``fetch`` installs what is missing into the running
interpreter's environment, with ``pip``, before it converts.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterable

from deltaspace.assets.fetcher import selected_models


def missing_requirements(extras: Iterable[str]) -> list[str]:
    """The pip requirements (``"gguf>=0.10"``) of the models of ``extras`` whose module cannot be imported."""
    missing: list[str] = []
    for model in selected_models(extras):
        for module, requirement in model.python_packages:
            if importlib.util.find_spec(module) is None and requirement not in missing:
                missing.append(requirement)
    return missing


def install_requirements(requirements: list[str], on_line: Callable[[str], None] = print) -> str | None:
    """``pip install`` ``requirements`` into this interpreter; None on success, else a one-line reason."""
    if not requirements:
        return None
    on_line(f"installing {' '.join(requirements)} (needed to convert the models asked for)")
    command = [sys.executable, "-m", "pip", "install", "--quiet", *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return (
            f"pip could not install {' '.join(requirements)} ({last}); "
            f"install it yourself (pip install 'deltaspace[smollm2]') and fetch again"
        )
    importlib.invalidate_caches()
    return None
