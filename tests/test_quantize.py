"""Quantization: rounding within half a step, exact packing, the layers against F.linear, the file
size of a 4-bit model, and the quantized file through the command line and sampling."""

import copy
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from nanollm import chat, quantize, sample
from nanollm.data import write_shard
from nanollm.errors import ConfigError
from nanollm.model import GPT, GPTConfig
from nanollm.quantize import (QuantizedEmbedding, QuantizedLinear, QuantizedMatrix, dequantize,
                              dequantize_model, load_quantized, pack_int4, quantize_groups,
                              quantize_int4, quantize_int8, quantize_model, save_quantized,
                              unpack_int4)
from nanollm.stages import save_stage
from nanollm.tokenizer import Tokenizer

TEXT = "The capital of Peru is Lima. The capital of Chile is Santiago. Once upon a time. " * 40


@dataclass
class RunConfig:  # what save_stage stores as the training config
    seed: int = 0


def weights(rows=16, cols=64, seed=0):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    w[3, 5] = 8.0  # an outlier: its row's (and group's) scale grows, the others' do not
    w[7] = 0.0  # an all-zero row must come back as zeros, not NaN
    return w


def test_int8_round_trip_is_within_half_a_step_per_channel():
    w = weights()
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (16, 1)
    assert q.abs().max() == 127 and (q[7] == 0).all()
    error = (dequantize(q, scale) - w).abs()
    assert (error <= scale / 2 * (1 + 1e-6)).all()  # round to nearest: half a step at most


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_grouped_round_trip_is_within_half_a_step_per_group(bits):
    w = weights()
    q, scale = quantize_groups(w, bits, group_size=16)
    qmax = 2 ** (bits - 1) - 1
    assert scale.shape == (16, 4) and q.abs().max() == qmax
    step = scale.repeat_interleave(16, dim=1)  # (O, I): each weight's own group scale
    assert ((dequantize(q, scale) - w).abs() <= step / 2 * (1 + 1e-6)).all()
    # groups are independent: the outlier widens the grid of its own group only
    assert scale[3, 0] > 2 * scale[3, 1:].max()


def test_int4_is_the_4_bit_group_code():
    w = weights()
    q, scale = quantize_int4(w, 32)
    assert q.min() >= -7 and q.max() <= 7 and scale.shape == (16, 2)
    assert torch.equal(dequantize(q, scale), dequantize(*quantize_groups(w, 4, 32)))


def test_pack_unpack_is_exact_and_halves_the_bytes():
    q = torch.randint(-8, 8, (5, 32), generator=torch.Generator().manual_seed(0)).to(torch.int8)
    q[0, :16] = torch.arange(-8, 8)  # every code at least once
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 16)
    assert torch.equal(unpack_int4(packed), q)
    assert packed[0, 0] == (-8 + 8) | ((-7 + 8) << 4)  # even column low nibble, odd one high


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantized_linear_is_f_linear_with_the_dequantized_weight(bits):
    linear = torch.nn.Linear(64, 16)
    layer = QuantizedLinear(QuantizedMatrix(linear.weight, bits, 16), linear.bias)
    x = torch.randn(3, 5, 64)
    q, scale = (quantize_int8(linear.weight) if bits == 8
                else quantize_groups(linear.weight.detach(), bits, 16))
    assert torch.equal(layer(x), F.linear(x, dequantize(q, scale), linear.bias))
    assert not list(layer.parameters())  # nothing trains: buffers only


def test_group_size_must_divide_the_input_size():
    with pytest.raises(ConfigError, match="does not divide"):
        quantize_groups(weights(), 4, group_size=24)


def tiny_gpt(vocab_size, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=64))


def test_quantized_gpt_ties_its_head_and_loses_more_with_fewer_bits():
    model = tiny_gpt(120).eval()
    idx = torch.randint(120, (2, 20), generator=torch.Generator().manual_seed(0))
    errors = []
    for bits in (8, 4, 3, 2):
        q = quantize_model(copy.deepcopy(model), bits, group_size=32)
        assert isinstance(q.transformer.wte, QuantizedEmbedding)
        assert q.lm_head.matrix is q.transformer.wte.matrix  # tied: one set of codes
        rows = torch.tensor([[3, 7]])
        assert torch.equal(q.transformer.wte(rows), q.transformer.wte.weight[rows])
        errors.append((q(idx) - model(idx)).abs().mean().item())
        plain = dequantize_model(copy.deepcopy(q))
        assert plain.lm_head.weight is plain.transformer.wte.weight
        assert torch.allclose(plain(idx), q(idx), atol=1e-6)
    assert errors == sorted(errors) and errors[0] < errors[-1] / 10


def test_4_bit_file_is_3_5_times_smaller_and_loads_back(tmp_path):
    tokenizer = Tokenizer.train(TEXT, 300)
    model = tiny_gpt(tokenizer.vocab_size).eval()
    fp32_path = save_stage(tmp_path, "sft", model, tokenizer, RunConfig(), step=1)
    idx = torch.randint(tokenizer.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    quantized = quantize_model(copy.deepcopy(model), 4, group_size=64)
    q_path = save_quantized(tmp_path, "sft", quantized, tokenizer, 4, 64)
    assert q_path.endswith("sft.q4.pt")
    assert os.path.getsize(fp32_path) >= 3.5 * os.path.getsize(q_path)
    loaded, loaded_tokenizer, state = load_quantized(tmp_path, "sft.q4")
    assert state["quantization"] == {"bits": 4, "group_size": 64}
    assert loaded_tokenizer.to_dict() == tokenizer.to_dict()
    assert torch.equal(loaded(idx), quantized(idx))


def test_command_line_writes_the_file_and_sampling_reads_it(tmp_path, capsys):
    tokenizer = Tokenizer.train(TEXT, 300)
    save_stage(tmp_path, "sft", tiny_gpt(tokenizer.vocab_size), tokenizer, RunConfig(), step=1)
    data_dir = tmp_path / "data"
    write_shard(data_dir / "val.bin", tokenizer.encode(TEXT), tokenizer.vocab_size)
    quantize.main(["--stage", "sft", "--out_dir", str(tmp_path), "--bits", "4",
                   "--group_size", "32", "--data_dir", str(data_dir), "--eval_windows", "4"])
    printed = capsys.readouterr().out
    assert (tmp_path / "sft.q4.pt").exists()
    assert "smaller than float32" in printed and "perplexity" in printed
    sample.main(["--stage", "sft.q4", "--out_dir", str(tmp_path), "--prompt", "The capital",
                 "--max_new_tokens", "5"])
    assert capsys.readouterr().out.startswith("The capital")
    # the chat command loads it too (a plain stage loader would refuse the file's keys)
    chat.main(["--stage", "sft.q4", "--out_dir", str(tmp_path), "--prompt", "Capital of Peru?",
               "--max_new_tokens", "5"])
