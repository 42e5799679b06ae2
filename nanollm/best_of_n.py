"""Best-of-n: sample n answers, keep the one the reward model scores highest.

The simplest way to optimise a policy's answers against a reward model, with no training at all,
and the one whose distance from the sampling policy is known exactly: for a reward with no ties,

    KL(best-of-n || policy) = log n - (n - 1) / n                     (Stiennon et al. 2020)

(an upper bound when rewards tie, Beirami et al. 2024). That makes it the ruler Gao et al. 2022
("Scaling Laws for Reward Model Overoptimization") measured reward hacking with: as n grows the
proxy reward (the reward model's score) of the kept answers keeps rising, while the gold reward
(what the reward model was meant to stand for) rises, peaks and falls, along

    gold(d) - gold(0) = d (alpha - beta d),      d = sqrt(KL)

    responses, scores = sample_and_score(model, prompts, 64, {"rm": reward_model}, ...)
    kept = best_of_n(scores["rm"])                           # (Q, n) -> (Q,) indices
    proxy, gold = best_of_n_estimates(proxy, gold, n=4)      # from m >= n samples per question
    alpha, beta = fit_gold_curve(d, gold_gain)

best_of_n_estimates averages over every subset of n of the m samples drawn per question, not one
draw of n: sample i, in ascending order of proxy score, is the best of a random n-subset with
probability C(i, n - 1) / C(m, n). Gao et al. estimate their curves the same way.
"""

import math

import torch

from nanollm.generate import generate


def best_of_n(scores):
    """(Q, n) reward-model scores of n answers per question -> (Q,) index of the kept one."""
    return scores.argmax(dim=1)


@torch.no_grad()
def sample_and_score(model, prompts, n, reward_models, max_new_tokens, stop_ids, pad_id,
                     generator=None, batch_size=256):
    """n answers to each prompt (lists of ids), sampled at temperature 1, and every reward
    model's score of each. Returns (responses, scores): responses[q][i] the ids of answer i to
    prompt q, scores {name: (Q, n)} for reward_models {name: model}."""
    rows = [prompt for prompt in prompts for _ in range(n)]  # each prompt's n answers in a row
    responses, scores = [], {name: [] for name in reward_models}
    for start in range(0, len(rows), batch_size):
        out = generate(model, rows[start:start + batch_size], max_new_tokens, temperature=1.0,
                       stop_ids=stop_ids, pad_id=pad_id, generator=generator)
        responses += out.responses()
        for name, reward_model in reward_models.items():
            scores[name].append(reward_model(out.ids, out.pad_mask, out.response_mask).float())
    grouped = [responses[q * n:(q + 1) * n] for q in range(len(prompts))]
    return grouped, {name: torch.cat(s).view(len(prompts), n) for name, s in scores.items()}


def best_of_n_kl(n):
    """KL (nats) of the best-of-n distribution from the sampling policy, for untied rewards."""
    return math.log(n) - (n - 1) / n


def best_of_n_probs(probs, rewards, n):
    """The exact distribution of the kept answer when n answers are drawn from the categorical
    `probs` (K,) and the one with the highest of the distinct `rewards` (K,) is kept:
    P(x) = F(x)^n - F(<x)^n, F the policy's cumulative probability in reward order."""
    order = torch.argsort(rewards)  # ascending reward
    cdf = torch.cumsum(probs[order], dim=0)  # (K,) P(reward <= that of x)
    below = cdf - probs[order]  # (K,) P(reward < that of x)
    kept = torch.empty_like(probs)
    kept[order] = cdf ** n - below ** n  # every one of the n draws at or below x, not all below
    return kept


def kept_weights(m, n):
    """(m,) probability that the sample of rank i (ascending, 0-based) among m is the best of a
    random n of them: C(i, n - 1) / C(m, n). The weights sum to 1."""
    if not 1 <= n <= m:
        raise ValueError(f"best-of-{n} needs 1 <= n <= m samples; got m={m}")
    total = math.comb(m, n)
    return torch.tensor([math.comb(i, n - 1) / total for i in range(m)], dtype=torch.float64)


def best_of_n_estimates(proxy, gold, n):
    """Expected proxy and gold reward of the kept answer, averaged over questions, from m >= n
    scored samples per question: proxy, gold (Q, m). Returns (proxy, gold) as floats."""
    order = proxy.argsort(dim=1)  # (Q, m) ascending proxy
    weights = kept_weights(proxy.size(1), n)  # (m,)
    kept_proxy = (proxy.gather(1, order).double() * weights).sum(1)  # (Q,)
    kept_gold = (gold.gather(1, order).double() * weights).sum(1)  # (Q,)
    return kept_proxy.mean().item(), kept_gold.mean().item()


def fit_gold_curve(d, gain):
    """Least squares fit of gain = d (alpha - beta d) to points (d, gain), d = sqrt(KL) and gain
    the gold reward above the starting policy's. Returns (alpha, beta); the gold reward peaks
    at d = alpha / (2 beta) when beta > 0."""
    d = torch.as_tensor(d, dtype=torch.float64)
    gain = torch.as_tensor(gain, dtype=torch.float64)
    features = torch.stack([d, -d * d], dim=1)  # (P, 2): gain = alpha * d + beta * (-d^2)
    solution = torch.linalg.lstsq(features, gain[:, None]).solution[:, 0]
    return solution[0].item(), solution[1].item()


def n_for_kl(kl):
    """The (real) n whose best-of-n KL is `kl`: best_of_n_kl inverted by bisection."""
    low, high = 1.0, 2.0
    while best_of_n_kl(high) < kl:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if best_of_n_kl(middle) < kl else (low, middle)
    return (low + high) / 2
