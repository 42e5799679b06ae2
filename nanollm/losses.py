"""Language-model losses written by hand: cross-entropy, per-token log-probabilities, perplexity.

Every stage of the pipeline scores text the same way: the model gives logits (B, T, V) and we ask
"how likely was the token that actually came next?". Pretraining and SFT minimise the negative
log of that probability (cross-entropy); PPO and DPO need the log-probabilities themselves, one
per token; evaluation reports perplexity, exp(mean negative log-likelihood).

    log p(target) = logit[target] - logsumexp(logits)              (log-softmax at one column)
    cross_entropy = -(1 / N) * sum over counted tokens of log p(target)
    perplexity    = exp(cross_entropy over a whole data set)

Targets equal to IGNORE_INDEX are not counted (padding, or prompt tokens in SFT).

Simplifications compared with F.cross_entropy:
1. No label smoothing, class weights or "sum"/"none" reductions: one masked mean.
2. Logits are always upcast to float32, which costs memory for big vocabularies; fused kernels
   avoid materialising the float32 copy.

Shapes: B batch, T time, V vocabulary, N = B * T flattened tokens.
"""

import math
from contextlib import nullcontext

import torch

# Target value meaning "no loss here"; the same convention as PyTorch's F.cross_entropy.
IGNORE_INDEX = -100


def token_logprobs(logits, targets, ignore_index=IGNORE_INDEX):
    """log p(target) for every position, float32; 0 where the target is ignored.

    logits (..., V) with targets (...), e.g. (B, T, V) with (B, T) -> (B, T).
    """
    # Why float32: in bf16 a logsumexp over thousands of logits loses the small differences
    # between them that the loss is made of.
    logits = logits.float()
    counted = targets != ignore_index  # (...)
    # gather needs a valid column even where the target is IGNORE_INDEX; any in-range id works
    # because those positions are zeroed below.
    safe_targets = targets.masked_fill(~counted, 0)  # (...)
    target_logits = logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...)
    # logsumexp subtracts the max before exponentiating, so logits of +-1e4 do not overflow.
    # Only the target column of log_softmax is needed, so we never build the full (..., V) array.
    logprobs = target_logits - torch.logsumexp(logits, dim=-1)  # (...)
    # where (not multiplication) so ignored positions get exactly 0 and no gradient.
    return torch.where(counted, logprobs, 0.0)


def nll_sum_and_count(logits, targets, ignore_index=IGNORE_INDEX):
    """Sum of negative log-likelihoods over counted tokens, and how many tokens were counted.

    Returns (nll_sum: scalar float32 tensor, count: scalar int64 tensor). Sums, not means, so that
    callers can add them across batches and divide once (see perplexity).
    """
    nll_sum = -token_logprobs(logits, targets, ignore_index).sum()
    count = (targets != ignore_index).sum()
    return nll_sum, count


class _CrossEntropy(torch.autograd.Function):
    """Mean NLL with its gradient written out: d loss / d logits = (softmax(logits) - onehot) / N.

    Autograd could differentiate token_logprobs for us, but it would keep several (N, V) float32
    arrays alive (upcast, exp, gather's scatter). The closed form needs one, which makes training
    of small models several times faster on a CPU, and it is the most useful formula to know.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index):  # logits (N, V), targets (N,)
        logits32 = logits.float()
        counted = targets != ignore_index  # (N,)
        safe_targets = targets.masked_fill(~counted, 0)
        lse = torch.logsumexp(logits32, dim=-1)  # (N,)
        nll = lse - logits32.gather(-1, safe_targets[:, None]).squeeze(-1)  # (N,)
        count = counted.sum().clamp(min=1)  # nothing counted: 0 / 1 = 0, never 0 / 0
        ctx.save_for_backward(logits, lse, safe_targets, counted, count)
        return torch.where(counted, nll, 0.0).sum() / count

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse, safe_targets, counted, count = ctx.saved_tensors
        grad = torch.exp(logits.float() - lse[:, None])  # softmax, (N, V)
        grad.scatter_add_(-1, safe_targets[:, None], torch.full_like(lse[:, None], -1.0))
        grad *= (counted.float() * grad_out / count)[:, None]  # ignored rows get no gradient
        return grad.to(logits.dtype), None, None


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX):
    """Mean negative log-likelihood of the targets: the next-token prediction loss.

    logits (B, T, V) with targets (B, T), or logits (N, V) with targets (N,). Returns a float32
    scalar. A batch in which every target is ignored gives 0 (with a graph, so .backward() works and
    every gradient is zero) rather than 0 / 0 = NaN. Same value as
    -token_logprobs(...).sum() / count, with a hand-written backward pass (see _CrossEntropy).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets "
                         f"{tuple(targets.shape)}: expected (B, T, V) with (B, T) "
                         "or (N, V) with (N,)")
    V = logits.size(-1)
    return _CrossEntropy.apply(logits.reshape(-1, V), targets.reshape(-1), ignore_index)


@torch.no_grad()
def perplexity(model, batches, autocast=None, device=None):
    """Token-weighted perplexity of `model` over an iterable of (x, y) batches.

    perplexity = exp(sum of NLL over all counted tokens / number of counted tokens)

    Weighting by tokens matters: averaging per-batch means would give a batch of 3 real tokens
    the same say as one of 3,000. `model(x)` must return logits (B, T, V). `autocast` is an
    optional zero-argument callable returning a context manager (e.g. `runtime.autocast`);
    `device`, if given, is where x and y are moved. The model's train/eval mode is restored.
    """
    autocast = autocast or nullcontext
    was_training = model.training
    model.eval()  # dropout off: we measure the model, not a random sub-network of it
    total_nll, total_count = 0.0, 0
    try:
        for x, y in batches:
            if device is not None:
                x, y = x.to(device), y.to(device)
            with autocast():
                logits = model(x)  # (B, T, V)
            nll_sum, count = nll_sum_and_count(logits, y)
            # float64 accumulation: summing millions of float32 losses drifts otherwise.
            total_nll += nll_sum.double().item()
            total_count += count.item()
    finally:
        model.train(was_training)
    if total_count == 0:
        raise ValueError("perplexity: the batches contain no counted target token")
    mean_nll = total_nll / total_count
    try:
        return math.exp(mean_nll)
    except OverflowError:  # a diverged model: report inf rather than crash the evaluation
        return math.inf
