import torch
from asset_fixtures import tiny_bert_dir

from deltaspace.assets import load_model
from deltaspace.assets.embed import encode, mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_batched_sorted_encoding_matches_one_by_one(tmp_path):
    model, tokenizer = load_model(tiny_bert_dir(tmp_path / "tiny"))
    texts = ["a man is playing guitar today", "the market", "someone plays an instrument", "fell"]
    batched = encode(model, tokenizer, texts, batch_size=3)
    single = torch.cat([encode(model, tokenizer, [t], batch_size=1) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))
    pairs = encode(model, tokenizer, texts[:2], ["a man", "the stock market fell"], batch_size=2)
    assert pairs.shape == (2, 32) and not torch.allclose(pairs, batched[:2])
