"""The hand-written losses against PyTorch's reference implementations."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanollm.losses import IGNORE_INDEX, cross_entropy, nll_sum_and_count, perplexity, \
    token_logprobs

B, T, V = 3, 5, 11


def _logits_and_targets(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * scale
    targets = torch.randint(V, (B, T), generator=g)
    targets[0, :2] = IGNORE_INDEX  # a prompt-like prefix
    targets[2, -1] = IGNORE_INDEX  # a padded end
    return logits, targets


def _reference(logits, targets):
    return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def test_cross_entropy_matches_pytorch_values_and_gradients():
    logits, targets = _logits_and_targets()
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours, ref = cross_entropy(ours_in, targets), _reference(ref_in, targets)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    # Ignored positions receive no gradient at all.
    assert ours_in.grad[0, :2].abs().max() == 0


def test_cross_entropy_accepts_flat_inputs():
    logits, targets = _logits_and_targets(seed=1)
    flat = cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    torch.testing.assert_close(flat, cross_entropy(logits, targets))
    torch.testing.assert_close(flat, _reference(logits, targets))


def test_cross_entropy_extreme_logits_stay_finite():
    logits, targets = _logits_and_targets(seed=2)
    logits = torch.where(logits > 0, 1e4, -1e4)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours, ref = cross_entropy(ours_in, targets), _reference(ref_in, targets)
    ours.backward()
    ref.backward()
    assert torch.isfinite(ours) and ours > 1000  # wrong confident guesses cost ~2e4 nats
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


def test_cross_entropy_bf16_logits_compute_in_float32():
    logits, targets = _logits_and_targets(seed=3)
    logits_bf16 = logits.bfloat16()
    ours = cross_entropy(logits_bf16, targets)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, _reference(logits_bf16.float(), targets))


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(B, T, V, requires_grad=True)
    targets = torch.full((B, T), IGNORE_INDEX)
    loss = cross_entropy(logits, targets)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(torch.zeros(B, T, V), torch.zeros(B, T + 1, dtype=torch.long))


def test_token_logprobs_match_log_softmax_gather():
    logits, targets = _logits_and_targets(seed=4)
    counted = targets != IGNORE_INDEX
    expected = F.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    expected = torch.where(counted, expected, 0.0)
    ours = token_logprobs(logits, targets)
    assert ours.shape == (B, T) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected)
    assert torch.all(ours[~counted] == 0)
    # The sum helper agrees with the mean.
    nll_sum, count = nll_sum_and_count(logits, targets)
    assert count.item() == counted.sum().item()
    torch.testing.assert_close(nll_sum / count, cross_entropy(logits, targets))


class UniformModel(torch.nn.Module):
    """Zero logits: every token equally likely, so the perplexity is exactly V."""

    def forward(self, x):
        return torch.zeros(*x.shape, V)


class FixedLogitsModel(torch.nn.Module):
    """Returns preset logits for each successive batch (to check how batches are weighted)."""

    def __init__(self, logits_per_batch):
        super().__init__()
        self.logits_per_batch = list(logits_per_batch)
        self.calls = 0

    def forward(self, x):
        logits = self.logits_per_batch[self.calls]
        self.calls += 1
        return logits


def test_perplexity_of_uniform_model_is_vocab_size_and_mode_is_restored():
    model = UniformModel()
    model.train()
    x = torch.zeros(2, T, dtype=torch.long)
    y = torch.randint(V, (2, T))
    y[0, 0] = IGNORE_INDEX
    assert perplexity(model, [(x, y), (x, y)]) == pytest.approx(V, rel=1e-6)
    assert model.training


def test_perplexity_weights_tokens_not_batches():
    logits_a, targets_a = _logits_and_targets(seed=5)
    logits_b, targets_b = _logits_and_targets(seed=6)
    targets_b[:, 1:] = IGNORE_INDEX  # batch b counts only 3 tokens, batch a counts 12
    x = torch.zeros(B, T, dtype=torch.long)
    model = FixedLogitsModel([logits_a, logits_b])
    ppl = perplexity(model, [(x, targets_a), (x, targets_b)])

    # By hand: every counted token's NLL, pooled, then one mean.
    nll = []
    for logits, targets in ((logits_a, targets_a), (logits_b, targets_b)):
        keep = targets != IGNORE_INDEX
        nll.append(-F.log_softmax(logits, -1)[keep].gather(-1, targets[keep][:, None])[:, 0])
    expected = math.exp(torch.cat(nll).mean().item())
    assert ppl == pytest.approx(expected, rel=1e-5)

    mean_of_means = math.exp(0.5 * (nll[0].mean() + nll[1].mean()).item())
    assert abs(mean_of_means - expected) > 1e-3 * expected  # the two definitions do differ here


def test_perplexity_with_autocast_callable():
    model = UniformModel()
    x = torch.zeros(1, T, dtype=torch.long)
    y = torch.randint(V, (1, T))
    ppl = perplexity(model, [(x, y)], autocast=lambda: torch.autocast("cpu", torch.bfloat16))
    assert ppl == pytest.approx(V, rel=1e-6)
