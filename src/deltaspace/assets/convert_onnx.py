"""Convert the paraphrase-MiniLM-L3-v2 ONNX export into a transformers ``BertModel`` checkpoint.

No library converts ONNX back to PyTorch, so this is written here. The export keeps the BERT names for
embeddings, biases and LayerNorms (``model.0.auto_model.<bert key>``); the 18 dense weights are
anonymous ``onnx::MatMul_*`` initialisers, identified by the bias that the Add node after their MatMul
consumes. ONNX stores them as (in, out), so they are transposed. The result is checked against
onnxruntime before it is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_PREFIX = "model.0.auto_model."
# The checkpoint ships without a tokenizer; it uses the same uncased 30,522-token BERT vocabulary as L6.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
CHECK_SENTENCES = (
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today, erasing the gains of the previous week.",
    "Is this hotel close to the station?",
)


def onnx_bert_state_dict(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The ``BertModel`` state dict held by a sentence-transformers BERT ONNX export."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    state: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        if name.startswith(_PREFIX):
            state[name[len(_PREFIX) :]] = torch.from_numpy(array.copy())
    for node in graph.node:
        if node.op_type != "Add":
            continue
        bias = next((i for i in node.input if i.startswith(_PREFIX) and i.endswith(".bias")), None)
        matmul_out = next(
            (i for i in node.input if i in producers and producers[i].op_type == "MatMul"), None
        )
        if bias is None or matmul_out is None:
            continue
        weight = next(
            (i for i in producers[matmul_out].input if i in arrays and not i.startswith(_PREFIX)), None
        )
        if weight is None:
            continue
        key = bias[len(_PREFIX) : -len(".bias")] + ".weight"
        state[key] = torch.from_numpy(arrays[weight].T.copy())
    return state


def bert_config_from_state(state: dict[str, torch.Tensor], num_heads: int = 12):
    from transformers import BertConfig

    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("encoder.layer."))
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        pad_token_id=0,
    )


def onnx_to_bert(onnx_path: Path, num_attention_heads: int = 12):
    """A ``BertModel`` (eval mode) with the weights of the ONNX export; raises on missing/extra keys.

    The head count is not an initializer (it hides in Reshape constants), so it is passed in; MiniLM has 12.
    """
    from transformers import BertModel

    state = onnx_bert_state_dict(onnx_path)
    model = BertModel(bert_config_from_state(state, num_attention_heads), add_pooling_layer=False)
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - model.state_dict().keys())
    if missing or unexpected:
        raise ValueError(f"ONNX -> BERT conversion failed: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def max_abs_difference(model, tokenizer, onnx_path: Path, sentences=CHECK_SENTENCES) -> float:
    """Largest |difference| between the model's and onnxruntime's last hidden states on real tokens."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = tokenizer(list(sentences), padding=True, return_tensors="np")
    feeds = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    hidden_size = model.config.hidden_size
    names = [o.name for o in session.get_outputs() if len(o.shape) == 3 and o.shape[-1] == hidden_size]
    if len(names) != 1:
        raise ValueError(f"cannot identify the last-hidden-state output of {onnx_path.name}")
    reference = session.run(names, feeds)[0]
    with torch.inference_mode():
        ours = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"].astype(bool)
    return float(np.abs(ours[mask] - reference[mask]).max())


def convert_onnx_bert(
    onnx_path: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    *,
    num_attention_heads: int = 12,
    tolerance: float = 1e-4,
) -> float:
    """Write a safetensors BERT checkpoint plus tokenizer to ``out_dir``; return the checked max diff.

    Raises ``ValueError`` when the converted model differs from onnxruntime by ``tolerance`` or more.
    """
    import shutil

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    model = onnx_to_bert(onnx_path, num_attention_heads)
    difference = max_abs_difference(model, tokenizer, onnx_path)
    if not difference < tolerance:
        raise ValueError(
            f"converted {onnx_path.name} differs from onnxruntime by {difference:.2e} (limit {tolerance:.0e})"
        )
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copy2(Path(tokenizer_dir) / name, Path(out_dir) / name)
    return difference
