"""Best-of-n and pass@k against brute force, Monte Carlo and values worked out by hand."""

import itertools
import math

import pytest
import torch

from nanollm.best_of_n import (best_of_n, best_of_n_estimates, best_of_n_kl, best_of_n_probs,
                               fit_gold_curve, kept_weights, n_for_kl, sample_and_score)
from nanollm.pass_at_k import mean_pass_at_k, pass_at_k


def test_best_of_n_kl_values():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert n_for_kl(best_of_n_kl(37)) == pytest.approx(37, rel=1e-6)


def test_best_of_n_distribution_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.4, 0.1, 0.3, 0.15, 0.05])
    rewards = torch.tensor([0.2, 0.9, -1.0, 0.5, 0.0])
    n, draws = 3, 200_000
    samples = torch.multinomial(probs, draws * n, replacement=True, generator=generator)
    samples = samples.view(draws, n)  # (draws, n)
    kept = samples.gather(1, best_of_n(rewards[samples])[:, None])[:, 0]  # (draws,)
    frequencies = torch.bincount(kept, minlength=5).float() / draws
    exact = best_of_n_probs(probs, rewards, n)
    assert exact.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(frequencies, exact, atol=4e-3, rtol=0)


def test_best_of_n_kl_formula_monte_carlo_and_bound():
    # many small, untied outcomes: the exact KL approaches log n - (n - 1) / n from below;
    # a Monte-Carlo estimate E[log q(x) / p(x)] over kept samples agrees with the exact KL
    generator = torch.Generator().manual_seed(1)
    K, n = 5000, 8
    probs = torch.rand(K, generator=generator, dtype=torch.float64) + 0.5
    probs /= probs.sum()
    rewards = torch.randn(K, generator=generator, dtype=torch.float64)
    kept = best_of_n_probs(probs, rewards, n)
    exact_kl = (kept * (kept / probs).log()).sum().item()
    assert exact_kl <= best_of_n_kl(n) + 1e-9
    assert exact_kl == pytest.approx(best_of_n_kl(n), abs=0.01)
    samples = torch.multinomial(probs, 100_000 * n, replacement=True, generator=generator)
    samples = samples.view(-1, n)
    winners = samples.gather(1, best_of_n(rewards[samples])[:, None])[:, 0]
    monte_carlo_kl = (kept[winners] / probs[winners]).log().mean().item()
    assert monte_carlo_kl == pytest.approx(best_of_n_kl(n), abs=0.03)


def test_kept_weights_and_estimates_against_all_subsets():
    proxy = torch.tensor([[0.3, -1.0, 2.0, 0.7, 1.1], [5.0, 4.0, 3.0, 2.0, 1.0]])
    gold = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 0.0, 1.0, 0.0]])
    m, n = 5, 3
    assert kept_weights(m, n).sum().item() == pytest.approx(1.0)
    expected_proxy, expected_gold = [], []
    for row_p, row_g in zip(proxy.tolist(), gold.tolist()):
        subsets = list(itertools.combinations(range(m), n))
        best = [max(s, key=lambda i: row_p[i]) for s in subsets]
        expected_proxy.append(sum(row_p[i] for i in best) / len(subsets))
        expected_gold.append(sum(row_g[i] for i in best) / len(subsets))
    got_proxy, got_gold = best_of_n_estimates(proxy, gold, n)
    assert got_proxy == pytest.approx(sum(expected_proxy) / 2)
    assert got_gold == pytest.approx(sum(expected_gold) / 2)
    # n = 1 is the plain mean, n = m the best of all
    assert best_of_n_estimates(proxy, gold, 1)[1] == pytest.approx(gold.mean().item())
    assert best_of_n_estimates(proxy, gold, 5)[1] == pytest.approx((3.0 + 0.0) / 2)


def test_fit_gold_curve_recovers_alpha_and_beta():
    d = torch.linspace(0.1, 3.0, 12)
    alpha, beta = fit_gold_curve(d, d * (0.8 - 0.25 * d))
    assert alpha == pytest.approx(0.8) and beta == pytest.approx(0.25)


def test_pass_at_k_against_enumeration():
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 3, 4), (4, 4, 2), (7, 1, 7)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        brute_force = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute_force)
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert mean_pass_at_k([(4, 0), (4, 4)], 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_sample_and_score_scores_each_answer_as_alone():
    from nanollm.model import GPT, GPTConfig
    from nanollm.reward import RewardModel
    config = GPTConfig(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    policy, reward_model = GPT(config).eval(), RewardModel(GPT(config)).eval()
    torch.nn.init.normal_(reward_model.head.weight)
    prompts = [[1, 2, 3], [4, 5]]
    responses, scores = sample_and_score(policy, prompts, 3, {"rm": reward_model}, 6,
                                         stop_ids=[7], pad_id=60,
                                         generator=torch.Generator().manual_seed(0))
    assert len(responses) == 2 and all(len(row) == 3 for row in responses)
    assert scores["rm"].shape == (2, 3)
    for q, prompt in enumerate(prompts):  # each answer scored in a batch of its own, unpadded
        for i, answer in enumerate(responses[q]):
            ids = torch.tensor([prompt + answer])
            response_mask = torch.zeros_like(ids, dtype=torch.bool)
            response_mask[0, len(prompt):] = True
            with torch.no_grad():
                alone = reward_model(ids, torch.ones_like(response_mask), response_mask)
            assert alone.item() == pytest.approx(scores["rm"][q, i].item(), abs=1e-5)
