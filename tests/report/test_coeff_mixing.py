"""What Coeff-Tuning learned: the per-layer statistics of C = I + Δ, on hand-made deltas with known answers,
and on a delta that a real Coeff model saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from typer.testing import CliRunner

import deltaspace.cli.tune  # noqa: F401 (registers `deltaspace report`)
from deltaspace.cli.app import app
from deltaspace.errors import MissingFileError, UserInputError
from deltaspace.report.coeff_mixing import LayerMixing, mixing_summary, mixing_table, read_mixing, run_mixing


def _run(folder: Path, deltas: dict[int, np.ndarray], extra: dict[str, np.ndarray] | None = None) -> Path:
    weights = {
        f"encoder.layer.{i}.attention.self.ds_coeff.delta": d.astype(np.float32) for i, d in deltas.items()
    }
    (folder / "delta").mkdir(parents=True)
    save_file({**weights, **(extra or {})}, str(folder / "delta" / "delta_model.safetensors"))
    return folder


def test_statistics_of_known_coefficients() -> None:
    still = LayerMixing.of("identity", np.zeros((4, 4)))
    assert (still.rel_norm, still.diag_mean, still.diag_min, still.mixing, still.uniform) == (0, 1, 1, 0, 0)
    # C = [[1, .5], [0, 1]]: head 0 takes half of head 1's map
    one = LayerMixing.of("one mix", np.array([[0.0, 0.5], [0.0, 0.0]]))
    assert one.rel_norm == pytest.approx(0.5 / np.sqrt(2))
    assert one.mixing == pytest.approx((0.5 / 1.5 + 0.0) / 2) and one.top == (0, 1, 0.5)
    assert one.uniform == pytest.approx(2 * (0.25**2) / 0.25)  # row means (0.25, 0) over ‖Δ‖² = 0.25
    # every head adds a multiple of the sum of all maps: all of Δ is in its row means
    rows = LayerMixing.of("rows", np.outer([0.1, -0.2, 0.3], np.ones(3)))
    assert rows.uniform == pytest.approx(1.0) and rows.diag_min == pytest.approx(0.8)
    # rows of Δ summing to 0.3, −0.6 and 0.9 rescale the heads' outputs by 1.3, 0.4 and 1.9
    assert rows.gain == pytest.approx((0.3 + 0.6 + 0.9) / 3)
    assert one.gain == pytest.approx(0.25) and still.gain == 0
    # a pure mix that keeps every row's mass (row sums 0) rescales nothing
    assert LayerMixing.of("swap", np.array([[-0.5, 0.5], [0.5, -0.5]])).gain == 0


def test_a_run_is_read_in_layer_order_and_refused_in_one_line_without_coefficients(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    deltas = {10: rng.normal(0, 0.1, (3, 3)), 2: rng.normal(0, 0.1, (3, 3)), 0: np.zeros((3, 3))}
    run = _run(tmp_path / "task" / "coeff+lora" / "seed0", deltas, {"lora_A": np.ones((2, 2), np.float32)})
    read = read_mixing(run)
    assert [name.split(".")[2] for name in read] == ["0", "2", "10"]
    np.testing.assert_allclose(read["encoder.layer.2.attention.self"], deltas[2], rtol=1e-6)
    assert run_mixing(run)[0].rel_norm == 0
    assert mixing_table([run])[1][:2] == ["task/coeff+lora/seed0", "layer 2"]
    with pytest.raises(MissingFileError, match="no saved delta"):
        read_mixing(tmp_path / "nowhere")
    other = tmp_path / "lora-only"
    (other / "delta").mkdir(parents=True)
    save_file({"lora_A": np.ones((2, 2), np.float32)}, str(other / "delta" / "delta_model.safetensors"))
    with pytest.raises(UserInputError, match="no Coeff-Tuning coefficients"):
        read_mixing(other)


def test_the_delta_a_coeff_model_saves_is_read(tmp_path: Path, make_bert) -> None:
    from deltaspace import CoeffTuningConfig, get_delta_model

    bert = make_bert()
    model = get_delta_model(bert, CoeffTuningConfig())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "ds_coeff" in name:
                parameter.fill_(0.25)
    model.save_pretrained(tmp_path / "run" / "delta")
    layers = run_mixing(tmp_path / "run")
    assert len(layers) == bert.config.num_hidden_layers
    heads = bert.config.num_attention_heads
    assert all(
        layer.uniform == pytest.approx(1.0) and layer.diag_mean == pytest.approx(1.25) for layer in layers
    )
    assert all(layer.rel_norm == pytest.approx(0.25 * heads / np.sqrt(heads)) for layer in layers)


def test_the_command_prints_the_table_and_draws_the_layers(tmp_path: Path) -> None:
    run = _run(tmp_path / "t" / "coeff" / "seed0", {0: np.eye(2) * 0.1, 1: np.ones((2, 2)) * -0.1})
    result = CliRunner().invoke(app, ["report", "coeff-mixing", str(run), "--plot", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert "layer 1" in result.output and (tmp_path / "m.png").stat().st_size > 2000
    # per run: the means over its two layers (‖Δ‖/‖I‖: 0.1·√2/√2 and 0.1·2/√2)
    assert mixing_summary([run])[0][:3] == ["t/coeff/seed0", "2", f"{(0.1 + 0.2 / np.sqrt(2)) / 2:.3f}"]
    result = CliRunner().invoke(app, ["report", "coeff-mixing", str(run), "--per-run"])
    assert result.exit_code == 0 and "0.121" in result.output and "layer 1" not in result.output
