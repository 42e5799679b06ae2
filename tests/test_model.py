"""The GPT against references: SDPA vs manual attention, causality, padding, the KV cache,
GPT-2 I/O. Generation from the model is tested in tests/test_generate.py."""

import copy

import pytest
import torch

from nanollm.gpt2 import TRANSPOSED, load_hf_gpt2, save_hf_gpt2
from nanollm.losses import cross_entropy
from nanollm.model import GPT, GPTConfig

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw}))


def random_ids(B, T, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=generator)


def test_logits_shape_and_param_count():
    model = tiny_model()
    assert model(random_ids(3, 7)).shape == (3, 7, TINY["vocab_size"])
    C, V, L = 16, 61, 2
    per_block = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    assert model.num_params() == V * C + L * per_block + 2 * C  # tied head counted once


def test_manual_attention_equals_sdpa_outputs_and_gradients():
    sdpa, manual = tiny_model(attention="sdpa"), tiny_model(attention="manual")
    manual.load_state_dict(sdpa.state_dict())
    idx = random_ids(2, 20)
    out_s, out_m = sdpa(idx), manual(idx)
    torch.testing.assert_close(out_s, out_m, atol=1e-5, rtol=1e-5)
    out_s.square().mean().backward()
    out_m.square().mean().backward()
    for (name, p), q in zip(sdpa.named_parameters(), manual.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_causality_future_token_leaves_past_unchanged(attention):
    model = tiny_model(attention=attention).eval()
    idx = random_ids(1, 12)
    changed = idx.clone()
    t = 6
    changed[0, t + 1] = (idx[0, t + 1] + 1) % TINY["vocab_size"]
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_left_padding_does_not_change_real_positions(attention):
    model = tiny_model(attention=attention).eval()
    idx = random_ids(1, 9)
    pad = 4
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), idx], 1)
    mask = torch.cat([torch.zeros(1, pad, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool)], 1)
    out = model(padded, pad_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, pad:], model(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_cached_decoding_equals_full_recomputation(attention):
    model = tiny_model(attention=attention).eval()
    idx = random_ids(2, 15)
    full = model(idx)
    cache = model.new_kv_cache(2)
    steps = [model(idx[:, :5], kv_cache=cache)]  # prefill, then one token at a time
    steps += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(5, 10)]
    steps += [model(idx[:, 10:], kv_cache=cache)]  # a chunk of several tokens after the cache
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_gpt2_folder_round_trip_gives_identical_logits(tmp_path, fmt):
    model = tiny_model(seed=3).eval()
    save_hf_gpt2(model, tmp_path)
    if fmt == "bin":  # the older format: a pickled state dict with GPT-2's Conv1D layout
        (tmp_path / "model.safetensors").unlink()
        state = {k: (v.t() if k.endswith(TRANSPOSED) else v) for k, v in model.state_dict().items()}
        state["transformer.h.0.attn.bias"] = torch.ones(1)  # a mask buffer old files carry
        torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_hf_gpt2(tmp_path).eval()
    idx = random_ids(2, 10)
    assert torch.equal(loaded(idx), model(idx))


def test_logits_at_chosen_positions_are_those_of_the_full_grid_with_their_gradients():
    model, idx = tiny_model(), random_ids(2, 6)
    at = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1]], dtype=torch.bool)
    full = model(idx)  # (2, 6, V)
    some = model(idx, at=at)  # (5, V)
    torch.testing.assert_close(some, full[at])
    wte = model.transformer.wte.weight
    (grad_full,) = torch.autograd.grad(full[at].logsumexp(-1).sum(), wte)
    (grad_some,) = torch.autograd.grad(some.logsumexp(-1).sum(), wte)
    torch.testing.assert_close(grad_some, grad_full)


def test_optimizer_decays_only_matrices():
    model = tiny_model()
    decay, no_decay = model.configure_optimizer(0.1, 1e-3).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gradient_accumulation_equals_one_big_batch():
    model = tiny_model()
    twin = copy.deepcopy(model)
    idx, k = random_ids(8, 11), 4
    x, y = idx[:, :-1], idx[:, 1:]
    cross_entropy(model(x), y).backward()
    for xs, ys in zip(x.chunk(k), y.chunk(k)):  # k micro-batches of size 2, each loss scaled 1/k
        (cross_entropy(twin(xs), ys) / k).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4)


def test_resize_vocab_keeps_old_rows_and_ties_head():
    model = tiny_model()
    old = model.transformer.wte.weight.detach().clone()
    model.resize_vocab(TINY["vocab_size"] + 3)
    assert torch.equal(model.transformer.wte.weight[:TINY["vocab_size"]], old)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model(random_ids(1, 4)).shape[-1] == TINY["vocab_size"] + 3


def test_compiled_model_gives_the_eager_logits():
    model = tiny_model().eval()
    idx = random_ids(2, 16)
    compiled = torch.compile(model)  # the first call compiles (tens of seconds on a CPU)
    torch.testing.assert_close(compiled(idx), model(idx), atol=1e-4, rtol=1e-4)
