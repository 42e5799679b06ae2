"""How likely a model finds each token of a sequence it is shown: the quantity PPO and DPO optimise.

    logprobs = sequence_logprobs(model, ids, pad_mask)   # (B, T)
    logprobs[b, t] == log p(ids[b, t] | ids[b, :t])

PPO compares these numbers between the policy, its old self and the frozen reference (ratios and
KL); DPO sums them over a response. Both read them from the same place, so both agree on where a
token's log-probability sits: at the token's own position t, although the logits that predict it
come out of position t - 1.

Simplifications:
1. The logits of the whole sequence are computed even though PPO uses only the response's.
   DPO and the reward model, which read nothing else, send only the positions that predict an
   answer token through the (C -> V) head (predicts_answer, answer_logprobs), which saves most
   of the head's work when answers are short.
2. Log-probabilities are those of the model's plain softmax (temperature 1). Rollouts that are
   scored with them must be sampled at temperature 1, without top-k or top-p, or the numbers would
   describe a different distribution than the one the tokens came from.
"""

import torch
import torch.nn.functional as F

from nanollm.losses import IGNORE_INDEX, token_logprobs


def sequence_logprobs(model, ids, pad_mask=None):
    """log p(ids[t] | ids[<t]) placed at position t: (B, T) float32.

    A token is scored only when it and the token before it are real: position 0 and the first
    real token of a left-padded row have no context to be predicted from, and padded positions
    are not text. Those get exactly 0 and no gradient. pad_mask None means every token is real.
    """
    logits = model(ids, pad_mask=pad_mask)  # (B, T, V)
    targets = ids[:, 1:]  # (B, T - 1): the token each position predicts
    if pad_mask is not None:
        # logits read at a padded position would predict from padding alone
        scored = pad_mask[:, 1:] & pad_mask[:, :-1]  # (B, T - 1)
        targets = targets.masked_fill(~scored, IGNORE_INDEX)
    next_logprobs = token_logprobs(logits[:, :-1], targets)  # (B, T - 1)
    # shift right by one so that a token's log-probability sits at the token's own position,
    # where response_mask and pad_mask can pick it out directly
    first = next_logprobs.new_zeros(ids.size(0), 1)  # (B, 1)
    return torch.cat([first, next_logprobs], dim=1)  # (B, T)


def predicts_answer(response_mask):
    """(B, T) bool: the positions whose next token is an answer token, i.e. the states whose
    logits score the answer. The token at t is predicted at t - 1, so this is response_mask
    shifted left by one."""
    return F.pad(response_mask[:, 1:], (0, 1))  # (B, T)


def answer_logprobs(logits, ids, response_mask):
    """log p(token) of every answer token, placed at the token's own position as in
    sequence_logprobs, 0 elsewhere: (B, T) float32.

    logits (N, V) are those of the positions predicts_answer(response_mask) picks, in row-major
    order (model(..., at=...) or lm_head(hidden[...]) give them so)."""
    answer = response_mask.clone()  # (B, T)
    answer[:, 0] = False  # no token before position 0 predicts it
    logps = token_logprobs(logits, ids[answer])  # (N,)
    return torch.zeros(ids.shape, device=ids.device).masked_scatter(answer, logps)  # (B, T)
