"""Generation against references: cached vs recomputed decoding, stop tokens, both samplers
against the softmax they draw from, and the small-batch float32 option against float32 decoding."""

import pytest
import torch

from nanollm.generate import (CPU_BF16_MIN_BATCH, decode_autocast, generate, sample_inverse_cdf,
                              sample_multinomial, sample_next)
from nanollm.model import GPT, GPTConfig

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)
SAMPLERS = [sample_multinomial, sample_inverse_cdf]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY))


def frequencies(draws, V):
    """Draws (R, n) of indices below V -> the share of each index in each row, (R, V)."""
    return torch.stack([torch.bincount(row, minlength=V) for row in draws]).float() / draws.size(1)


def assert_close_to(freqs, probs, n):
    """Each empirical share within 5 standard deviations of a binomial share of n draws."""
    sigma = (probs * (1 - probs) / n).sqrt()
    assert ((freqs - probs).abs() <= 5 * sigma + 1e-9).all(), (freqs, probs)


# ----------------------------------------------------------------------------------- decoding


def test_greedy_generation_same_with_and_without_cache_and_batched():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    cached = generate(model, prompts, 12, temperature=0, use_cache=True)
    uncached = generate(model, prompts, 12, temperature=0, use_cache=False)
    assert torch.equal(cached.ids, uncached.ids)
    for i, p in enumerate(prompts):  # each row alone equals its row in the padded batch
        alone = generate(model, [p], 12, temperature=0)
        assert alone.responses()[0] == cached.responses()[i]


def test_generation_stops_each_row_at_its_stop_token_and_masks_the_rest():
    model = tiny_model()
    prompts = [[1, 2], [3, 4, 5]]
    free = generate(model, prompts, 10, temperature=0)
    stop = free.responses()[0][3]  # row 0's fourth greedy token becomes the stop token
    out = generate(model, prompts, 10, temperature=0, stop_ids=[stop], pad_id=0)
    row0 = out.responses()[0]
    assert row0[-1] == stop and stop not in row0[:-1] and len(row0) <= 4
    assert not (out.response_mask & ~out.pad_mask).any()  # never a response mask on padding
    assert not out.response_mask[:, :out.prompt_len].any()


# ----------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_draw_with_the_given_probabilities(sampler):
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    n = 100_000
    draws = sampler(probs.repeat_interleave(n, 0), g).view(3, n)  # (3, n)
    freqs = frequencies(draws, 4)
    assert_close_to(freqs, probs, n)
    assert freqs[0, 1] == 0 and freqs[1, 3] == 1  # probability 0 is never drawn
    # the same generator state gives the same draws
    again = sampler(probs, torch.Generator().manual_seed(1))
    assert torch.equal(again, sampler(probs, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_next_draws_from_the_softmax_of_logits_over_temperature(sampler):
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    n, temperature = 100_000, 1.7
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.repeat(n, 1), temperature, generator=g, sampler=sampler)  # (n,)
    assert_close_to(frequencies(draws[None], 5), torch.softmax(logits / temperature, -1), n)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_filters(sampler):
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)

    def draw(**kw):
        return sample_next(logits, 1.0, generator=g, sampler=sampler, **kw)

    assert (sample_next(logits, 0) == 1).all()
    assert (draw(top_k=1) == 1).all()
    assert set(draw(top_k=2).tolist()) == {1, 3}
    # p(1) = 0.64, p(3) = 0.24: top_p 0.5 keeps token 1 only, 0.8 keeps tokens 1 and 3
    assert (draw(top_p=0.5) == 1).all()
    assert set(draw(top_p=0.8).tolist()) == {1, 3}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_generate_samples_reproducibly_with_a_generator(sampler):
    model, prompts = tiny_model(), [[1, 2, 3], [4, 5]]

    def sample(seed):
        return generate(model, prompts, 10, temperature=1.0, sampler=sampler,
                        generator=torch.Generator().manual_seed(seed)).ids

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


# ----------------------------------------------------------------------- the dtype switch


def test_decode_autocast_turns_bfloat16_off_for_small_batches_on_a_cpu():
    cpu = torch.device("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with decode_autocast(cpu, CPU_BF16_MIN_BATCH - 1):
            assert not torch.is_autocast_enabled("cpu")
        with decode_autocast(cpu, CPU_BF16_MIN_BATCH):
            assert torch.is_autocast_enabled("cpu")  # large batches keep bfloat16


def test_small_batch_float32_decodes_the_float32_tokens():
    # Under bfloat16 the plain path may pick other greedy tokens (two logits within rounding),
    # so each path is checked against what it must equal: the switch against float32 decoding,
    # the plain path by the autocast state the model ran in.
    model, prompts = tiny_model(), [[1, 2, 3], [4, 5, 6, 7], [8]]
    assert len(prompts) < CPU_BF16_MIN_BATCH
    float32 = generate(model, prompts, 12, temperature=0).ids
    assert torch.equal(generate(model, prompts, 12, temperature=0, small_batch_float32=True).ids,
                       float32)  # without autocast the option changes nothing
    seen = []
    hook = model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        switched = generate(model, prompts, 12, temperature=0, small_batch_float32=True).ids
        assert seen and not any(seen)  # every decoding step ran in float32 ...
        assert torch.equal(switched, float32)  # ... so the tokens are the float32 ones
        seen.clear()
        generate(model, prompts, 12, temperature=0)
        assert seen and all(seen)  # the plain path keeps the caller's bfloat16
        seen.clear()
        generate(model, prompts * CPU_BF16_MIN_BATCH, 12, temperature=0, small_batch_float32=True)
        assert seen and all(seen)  # a large batch keeps bfloat16 even with the option
    hook.remove()
