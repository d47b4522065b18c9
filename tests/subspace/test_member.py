import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig

from deltaspace import get_delta_model
from deltaspace.subspace import DeltaModelMember, SubspaceMember, evaluate


@pytest.fixture
def lora_member(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, LoraConfig(r=2, target_modules=["query", "value"]), seed=0)
    member = DeltaModelMember("lora", model, dropout_in_loss=False)
    batch = {**text_batch, "labels": torch.tensor([0, 2])}
    return model, member, batch


def test_delta_model_member_matches_the_model(lora_member):
    model, member, batch = lora_member
    assert isinstance(member, SubspaceMember)
    assert torch.equal(member.theta0, model.solution_vector())
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    expected_logits = model(**inputs).logits
    theta = member.theta0.clone().requires_grad_(True)
    loss = member.loss(theta, batch)
    torch.testing.assert_close(loss, F.cross_entropy(expected_logits, batch["labels"]))
    loss.backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0  # gradients reach the flat vector
    assert torch.equal(member.predict(member.theta0, batch), expected_logits.argmax(-1))
    assert not model.training  # predict runs in eval mode
    # a different θ changes the outputs without touching the model's own parameters
    before = model.solution_vector()
    moved = member.theta0 + 0.5 * torch.randn_like(member.theta0)
    assert not torch.allclose(member.loss(moved, batch), loss)
    assert torch.equal(model.solution_vector(), before)
    assert set(evaluate(member, member.theta0, [batch], num_labels=3)) == {"accuracy", "macro_f1"}


def test_delta_model_member_rejects_bad_input(lora_member):
    _, member, batch = lora_member
    with pytest.raises(ValueError, match="labels"):
        member.loss(member.theta0, {k: v for k, v in batch.items() if k != "labels"})
    with pytest.raises(ValueError, match="theta has shape"):
        member.loss(torch.zeros(3), batch)
    with pytest.raises(ValueError, match="no vector_to_solution"):
        DeltaModelMember("x", torch.nn.Linear(2, 2))


def test_bf16_autocast_member_follows_the_float32_one(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, LoraConfig(r=2, target_modules=["query", "value"]), seed=0)
    exact = DeltaModelMember("lora", model, dropout_in_loss=False)
    cast = DeltaModelMember("lora", model, dropout_in_loss=False, autocast=torch.bfloat16)
    batch = {**text_batch, "labels": torch.tensor([0, 2])}
    theta = (exact.theta0 + 0.1 * torch.randn_like(exact.theta0)).requires_grad_(True)
    cast_theta = theta.detach().clone().requires_grad_(True)
    loss, cast_loss = exact.loss(theta, batch), cast.loss(cast_theta, batch)
    assert cast_loss.dtype == torch.float32 and cast.outputs(theta.detach(), batch).dtype == torch.float32
    torch.testing.assert_close(cast_loss, loss, rtol=3e-2, atol=3e-2)  # bfloat16 keeps ~3 digits
    assert not torch.equal(cast_loss, loss)  # the products did run in bfloat16
    loss.backward()
    cast_loss.backward()
    assert cast_theta.grad.dtype == torch.float32
    cosine = F.cosine_similarity(theta.grad, cast_theta.grad, dim=0)
    assert cosine > 0.98, cosine  # the same descent direction
