"""pass@k: the share of questions answered right at least once in k samples.

Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", section 2.1) estimate it from
n >= k samples per question, c of them right, without bias:

    pass@k = 1 - C(n - c, k) / C(n, k)

the chance that k of the n samples, drawn without replacement, include a right one. Drawing just
k samples and checking them would estimate the same number with much more variance; taking
1 - (1 - c/n)^k would be biased low. pass@1 is the plain share of right samples.

    pass_at_k(n=16, c=4, k=1)                    # 0.25
    mean_pass_at_k([(16, 4), (16, 0)], k=4)      # averaged over questions

Why it matters for RL: a policy that only moves probability towards answers it could already give
raises pass@1 and leaves pass@k for large k where it was (Yue et al. 2025); one that learned
something new raises both.
"""


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are right. The product form of
    1 - C(n - c, k) / C(n, k) avoids the huge binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every choice of k samples holds a right one
        return 1.0
    miss = 1.0  # C(n - c, k) / C(n, k) = prod over i in (n - c, n] of (1 - k / i)
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts, k):
    """pass@k averaged over questions, from (n, c) per question."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
