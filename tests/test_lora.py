"""LoRA: B = 0 is the base model, only A and B learn, merging changes nothing, adapters on disk."""

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from nanollm.errors import CheckpointError, ConfigError
from nanollm.lora import (BLOCK_LINEARS, FrozenBase, LoRALinear, TokenRows, adapters_disabled,
                          add_lora, count_trainable, load_adapters, lora_delta, lora_layers,
                          lora_parameters, lora_state_dict, lora_summary, merge_lora,
                          optimizer_state_bytes, save_adapters)
from nanollm.model import GPT, GPTConfig
from nanollm.quantize import dequantize_model, quantize_model

CONFIG = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)


@dataclass
class RunConfig:  # what save_adapters stores beside the adapters
    lora_rank: int = 4


@pytest.fixture
def base():
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


@pytest.fixture
def idx():
    return torch.randint(CONFIG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))


def train_a_little(model, idx, steps=5):
    """A few AdamW steps on next-token prediction: the adapters move away from B = 0."""
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    for _ in range(steps):
        logits = model(idx[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_zero_B_is_the_base_model_exactly(base, idx):
    model = add_lora(copy.deepcopy(base), rank=4, alpha=8, targets=BLOCK_LINEARS)
    assert torch.equal(model(idx), base(idx))
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 4 * CONFIG.n_layer  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    assert all((m.lora_B == 0).all() and (m.lora_A != 0).any() for m in layers)


def test_lora_delta_is_scale_times_B_A_x():
    torch.manual_seed(0)
    x, A, B = torch.randn(3, 5, 8), torch.randn(2, 8), torch.randn(6, 2)
    assert torch.allclose(lora_delta(x, A, B, 0.5), x @ (0.5 * B @ A).T, atol=1e-6)


def test_only_adapters_get_gradients_and_change(base, idx):
    model = add_lora(copy.deepcopy(base), rank=4, alpha=8, targets=BLOCK_LINEARS)
    model(idx).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_parameters() if "lora_" in n}
    layer = model.transformer.h[0].attn.c_attn
    # while B = 0, dL/dA = B^T (...) is zero and only B moves on the first step
    assert (layer.lora_A.grad == 0).all() and (layer.lora_B.grad != 0).any()
    model.zero_grad()
    before = {n: p.clone() for n, p in model.named_parameters()}
    train_a_little(model, idx)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if "lora_" in n}


def test_targets_pick_layers_and_never_the_head_or_embeddings(base):
    default = add_lora(copy.deepcopy(base), rank=2, alpha=2)  # the attention's q, k, v (c_attn)
    assert [n for n, m in default.named_modules() if isinstance(m, LoRALinear)] == [
        f"transformer.h.{i}.attn.c_attn" for i in range(CONFIG.n_layer)]
    model = add_lora(copy.deepcopy(base), rank=2, alpha=2, targets=("c_attn",))
    adapted = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert adapted == [f"transformer.h.{i}.attn.c_attn" for i in range(CONFIG.n_layer)]
    assert isinstance(model.lm_head, nn.Linear) and not model.transformer.wte.weight.requires_grad
    C = CONFIG.n_embd
    trained, total = count_trainable(model)
    assert trained == CONFIG.n_layer * 2 * (C + 3 * C)  # r (in + out) per adapted layer
    assert total == trained + sum(p.numel() for p in base.parameters())  # tied head once
    assert optimizer_state_bytes(trained) == trained * 2 * 4  # AdamW: two float32 per parameter
    assert f"{trained:,} of {total:,}" in lora_summary(model)
    with pytest.raises(ConfigError, match="lm_head"):
        add_lora(copy.deepcopy(base), rank=2, alpha=2, targets=("lm_head",))


def test_merged_equals_unmerged_and_is_a_plain_gpt(base, idx):
    model = train_a_little(add_lora(copy.deepcopy(base), rank=4, alpha=8), idx)
    merged = merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert torch.allclose(merged(idx), model(idx), atol=1e-5)
    assert not torch.allclose(merged(idx), base(idx), atol=1e-3)  # the adapters did something
    plain = GPT(CONFIG).eval()
    plain.load_state_dict(merged.state_dict())  # the same keys and shapes as any stage
    assert torch.equal(plain(idx), merged(idx))


def test_adapters_disabled_is_the_base_model(base, idx):
    model = train_a_little(add_lora(copy.deepcopy(base), rank=4, alpha=8), idx)
    tuned = model(idx)
    with adapters_disabled(model):
        assert torch.equal(model(idx), base(idx))
    assert torch.equal(model(idx), tuned)  # switched back on afterwards


def test_adapters_round_trip_through_a_file(tmp_path, base, idx):
    model = train_a_little(add_lora(copy.deepcopy(base), rank=4, alpha=8, targets=("c_fc",)),
                           idx)
    path = save_adapters(tmp_path, "sft", model, RunConfig())
    assert path.endswith("sft.lora.pt")
    fresh = copy.deepcopy(base)  # no adapters yet: load_adapters adds them as saved
    state = load_adapters(tmp_path, "sft", fresh)
    assert state["lora"]["targets"] == ["c_fc"] and state["train_config"] == {"lora_rank": 4}
    assert lora_state_dict(fresh).keys() == lora_state_dict(model).keys()
    assert torch.equal(fresh(idx), model(idx))
    other = add_lora(copy.deepcopy(base), rank=4, alpha=8)  # adapters on other layers
    with pytest.raises(CheckpointError, match="do not fit"):
        load_adapters(tmp_path, "sft", other)


def test_qlora_adapters_on_a_quantized_base(base, idx):
    model = add_lora(copy.deepcopy(base), rank=4, alpha=8)
    quantize_model(model, 4, group_size=8, embeddings=False)
    quantized_base = quantize_model(copy.deepcopy(base), 4, group_size=8, embeddings=False)
    assert torch.equal(model(idx), quantized_base(idx))  # B = 0: the quantized base exactly
    train_a_little(model, idx)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == \
        sum(p.numel() for p in lora_parameters(model))
    merged = merge_lora(dequantize_model(copy.deepcopy(model)))
    assert torch.allclose(merged(idx), model(idx), atol=1e-5)
    GPT(CONFIG).load_state_dict(merged.state_dict())


def test_frozen_base_is_the_base_model_and_leaves_the_trained_model_alone(base, idx):
    """DPO's and PPO's reference under LoRA: the trained model with its adapters off, no copy."""
    model = train_a_little(add_lora(copy.deepcopy(base), rank=4, alpha=8), idx).train()
    reference = FrozenBase(model)
    with torch.no_grad():
        assert torch.equal(reference(idx), base(idx))
        assert not torch.allclose(model.eval()(idx), base(idx))  # the adapters did learn
    model.train()
    reference.eval()  # what generation does to the model it is given
    assert model.training and all(m.enabled for _, m in lora_layers(model))
    assert next(reference.parameters()) is next(model.parameters())  # the same weights
    assert not reference(idx).requires_grad


TOKENS = (3, 47)  # a chat format's special tokens, say


def test_token_rows_train_only_their_rows_and_the_tied_head_reads_them(base, idx):
    """train_tokens: the rows of a few tokens train as well, read by the embedding and the head."""
    model = add_lora(copy.deepcopy(base), rank=2, alpha=4, train_tokens=TOKENS)
    assert isinstance(model.transformer.wte, TokenRows)
    assert torch.equal(model(idx), base(idx))  # rows start as the base's, B = 0
    C = CONFIG.n_embd
    trained, total = count_trainable(model)
    assert trained == CONFIG.n_layer * 2 * (C + 3 * C) + len(TOKENS) * C
    assert sum(p.numel() for p in lora_parameters(model)) == trained
    train_a_little(model, idx)
    table, before = model.transformer.wte.weight, base.transformer.wte.weight  # (V, C) each
    changed = (table != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == list(TOKENS)
    hidden = model.hidden(idx)  # (B, T, C)
    assert torch.allclose(model(idx), hidden @ table.T, atol=1e-6)  # the head reads the rows
    with adapters_disabled(model):
        assert torch.equal(model(idx), base(idx))


def test_token_rows_merge_into_a_plain_tied_gpt_and_round_trip(tmp_path, base, idx):
    model = train_a_little(add_lora(copy.deepcopy(base), rank=2, alpha=4, train_tokens=TOKENS),
                           idx)
    save_adapters(tmp_path, "sft", model, RunConfig())
    fresh = copy.deepcopy(base)
    state = load_adapters(tmp_path, "sft", fresh)
    assert state["lora"]["train_tokens"] == list(TOKENS)
    assert torch.equal(fresh(idx), model(idx))
    merged = merge_lora(copy.deepcopy(model))
    assert merged.lm_head.weight is merged.transformer.wte.weight  # tied again
    assert torch.allclose(merged(idx), model(idx), atol=1e-5)
    plain = GPT(CONFIG).eval()
    plain.load_state_dict(merged.state_dict())
    assert torch.equal(plain(idx), merged(idx))


def test_token_rows_on_a_4_bit_base_dequantize_and_merge(base, idx):
    model = add_lora(copy.deepcopy(base), rank=2, alpha=4, train_tokens=TOKENS)
    quantize_model(model, 4, group_size=8, embeddings=False)  # QLoRA: the blocks in 4 bits
    train_a_little(model, idx)
    merged = merge_lora(dequantize_model(copy.deepcopy(model)))
    assert torch.allclose(merged(idx), model(idx), atol=1e-5)
    GPT(CONFIG).load_state_dict(merged.state_dict())


def test_token_ids_must_be_in_the_vocabulary(base):
    with pytest.raises(ConfigError, match="train_tokens"):
        add_lora(copy.deepcopy(base), rank=2, alpha=4, train_tokens=(CONFIG.vocab_size,))
