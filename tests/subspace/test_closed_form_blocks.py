"""The closed form's float64 reductions run over column blocks (full fine-tuning's solutions are T × 22.7M):
they must equal the whole-matrix formulas, and the span basis stays orthogonal at the solutions' rms norm."""

import pytest
import torch

from deltaspace.subspace import closed_form
from deltaspace.subspace.closed_form import normalised_gram, rms_norm, span_basis


@pytest.mark.parametrize("block", [7, 1 << 20])  # several blocks with a ragged last one; one block
def test_blocked_gram_and_rms_norm_equal_the_whole_matrix_formulas(monkeypatch, block):
    monkeypatch.setattr(closed_form, "_BLOCK", block)
    deltas = torch.randn(5, 40, generator=torch.Generator().manual_seed(0)) * 3
    whole = deltas.double()
    scale = float(whole.pow(2).sum(-1).mean().sqrt())
    assert rms_norm(deltas) == pytest.approx(scale, rel=1e-12)
    torch.testing.assert_close(normalised_gram(deltas), (whole / scale) @ (whole / scale).t())
    with pytest.raises(ValueError, match="every source delta of a DET is zero"):
        normalised_gram(torch.zeros(3, 10))


def test_span_basis_is_orthogonal_at_the_rms_norm_and_spans_the_solutions(monkeypatch):
    monkeypatch.setattr(closed_form, "_BLOCK", 16)
    deltas = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    deltas[3] = deltas[0] + deltas[1]  # rank 3: the duplicate direction is dropped
    basis = span_basis(deltas, dim=8)
    assert basis.shape == (50, 3)
    scale = rms_norm(deltas)
    torch.testing.assert_close(basis.t() @ basis, scale**2 * torch.eye(3), rtol=1e-4, atol=1e-4 * scale**2)
    # every solution lies in the span: its least-squares residual on the basis is ~0
    coef = torch.linalg.lstsq(basis, deltas.t()).solution
    torch.testing.assert_close(basis @ coef, deltas.t(), rtol=1e-4, atol=1e-4)
    assert span_basis(deltas, dim=2).shape == (50, 2)
