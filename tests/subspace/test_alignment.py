import pytest
import torch

from deltaspace.heads import PrototypeClassifier
from deltaspace.subspace.alignment import alignment_maps, embedding_batch, misalignment


def test_the_identity_as_prototypes_makes_the_head_output_the_unit_embedding():
    hidden = torch.randn(3, 5, 8)

    class Encoder(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None, return_dict=True, **_):
            return type("Out", (), {"last_hidden_state": hidden})()

    encoder = Encoder()
    head = PrototypeClassifier(encoder, torch.randn(2, 8), temperature=2.0)
    batch = {
        "input_ids": torch.zeros(3, 5, dtype=torch.long),
        "attention_mask": torch.ones(3, 5),
        "prototypes": torch.randn(2, 8),
        "labels": torch.zeros(3),
    }
    probe = embedding_batch(batch)
    assert batch["prototypes"].shape == (2, 8)  # the caller's batch is left alone
    out = head(**{k: v for k, v in probe.items() if k != "labels"}).logits
    expected = 2.0 * torch.nn.functional.normalize(hidden.mean(1), dim=-1)
    torch.testing.assert_close(out, expected)


def test_embedding_batch_needs_prototypes():
    with pytest.raises(ValueError, match="needs batches with a \\(labels, hidden\\) 'prototypes' tensor"):
        embedding_batch({"input_ids": torch.zeros(2, 3)})


def test_more_candidates_than_directions_match_the_consensus_better():
    torch.manual_seed(0)
    shared = torch.randn(40, 3)
    # Each member's first candidates mix the shared changes with changes of its own; further candidates
    # hold the shared ones cleanly (and unrelated ones): only a pool can find them.
    changes = {
        f"m{i}": torch.cat(
            [
                shared @ torch.randn(3, 3) + torch.randn(40, 3),
                shared @ torch.randn(3, 3),
                torch.randn(40, 3),
            ],
            dim=1,
        )
        for i in range(3)
    }
    square = alignment_maps({k: f[:, :3] for k, f in changes.items()})
    pooled = alignment_maps(changes, columns=3)
    assert all(m.shape == (9, 3) for m in pooled.values())
    assert misalignment(changes, pooled) < 0.15
    assert misalignment({k: f[:, :3] for k, f in changes.items()}, square) > 0.5
    with pytest.raises(ValueError, match="columns must be between 1 and the 9 candidates"):
        alignment_maps(changes, columns=10)
