"""Dequantise a GGUF checkpoint once (transformers' own GGUF reader) and save it as safetensors.

transformers marks a model loaded from GGUF as quantized and refuses to ``save_pretrained`` it, even
when its weights were expanded to dense fp32. The dense weights are therefore copied (strictly) into
a plain model built from the same config, checked to give the same logits, and that model is saved.
"""

from __future__ import annotations

from pathlib import Path


def convert_gguf(gguf_path: Path, out_dir: Path) -> int:
    """Load ``gguf_path`` as an fp32 causal LM, save model and tokenizer to ``out_dir``; return #params.

    transformers needs the ``gguf`` and ``accelerate`` packages for this (``pip install deltaspace[smollm2]``).
    """
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise ImportError(
                f"converting {gguf_path.name} needs the '{package}' package; pip install {package}"
            )
    gguf_path = Path(gguf_path)
    kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs).eval()

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    plain.load_state_dict(loaded.state_dict(), strict=True)
    sample = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        difference = (plain(**sample).logits - loaded(**sample).logits).abs().max().item()
    if difference > 1e-5:
        raise ValueError(f"dense copy of {gguf_path.name} differs from the GGUF load by {difference:.2e}")
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in plain.parameters())
