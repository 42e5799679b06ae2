"""Direct Preference Optimisation: learn from preference pairs with no reward model and no RL.

DPO (Rafailov et al. 2023) notices that the policy which maximises "reward - beta * KL to the
reference" is pi(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x). Turned around, every policy
defines the reward it is optimal for,

    r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + beta * log Z(x),

and in the Bradley-Terry likelihood of a pair (see reward.py) the unknown Z(x) cancels. So the
reward model's loss becomes a loss on the policy itself:

    # log pi of both answers of each pair, (B,) each (pairs.score_pairs: one batch of 2B rows)
    chosen_logps, rejected_logps = score_pairs(partial(response_logprob, policy), rendered, pad)
    ...the same for the frozen reference, under torch.no_grad()...
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen_logps, rejected_logps,
                                                        ref_chosen_logps, ref_rejected_logps, beta)
    losses.mean().backward()

The paper's DPO is dpo_loss with beta 0.1 on summed log-probabilities; train_dpo.py runs it by
default.

Variants, each a function or one argument: IPO (ipo_loss, Azar et al. 2023) regresses the
log-ratio margin to a fixed target instead of pushing it to infinity; conservative DPO (dpo_loss's
label_smoothing, Mitchell 2023) assumes a share of the labels is flipped; chosen_nll is the SFT loss
of the chosen answers, added to DPO's with a weight (RPO, Pang et al. 2024); response_logprob's
average=True scores an answer by its mean token log-probability instead of the sum.

Where it simplifies:
1. Only these three losses; none of the later variants (KTO, ORPO, SimPO, ...).
2. Reference log-probabilities are whatever the caller passes: computing them once for the whole
   data set before training saves one forward pass per step, and is the caller's choice.
3. The trunk reads every sequence over its full padded length, prompt included; only the
   positions that predict an answer token go through the language head.
"""

import torch
import torch.nn.functional as F

from nanollm.logprobs import answer_logprobs, predicts_answer
from nanollm.reward import preference_accuracy


def response_logprob(model, ids, pad_mask, response_mask, average=False):
    """log pi(response | prompt) of each row: the sum over response tokens of log p(token), (B,).

    Prompt and padding tokens never count: only positions where response_mask is True are
    summed. average=True divides by the number of response tokens. The sum is the log-probability
    of the whole answer, as DPO's paper uses it; it grows more negative with every token, so
    comparing answers of different lengths favours the short one, and DPO's margin can be moved
    by length alone. The per-token mean removes that length effect (as IPO implementations and
    SimPO do), at the price of no longer being a probability of the answer.
    """
    logits = model(ids, pad_mask=pad_mask, at=predicts_answer(response_mask))  # (N, V)
    response_logps = answer_logprobs(logits, ids, response_mask).sum(dim=1)  # (B,)
    if average:
        return response_logps / response_mask.sum(dim=1).clamp(min=1)
    return response_logps


@torch.no_grad()
def token_logratios(policy, reference, ids, pad_mask, response_mask):
    """log pi(token) - log pi_ref(token) of every answer token, (B, T) float32, 0 off the answer.

    A row sums to log(pi(y) / pi_ref(y)), and beta times that is the answer's implied reward;
    read token by token, it shows what the reward is made of. Tokens two answers share from the
    start cancel in a pair's margin; what is left is where they differ, and DPO moves most easily
    the tokens many answers share (the words of a compliment, say) rather than the single token
    that makes an answer wrong."""
    at = predicts_answer(response_mask)
    policy_logps = answer_logprobs(policy(ids, pad_mask=pad_mask, at=at), ids, response_mask)
    ref_logps = answer_logprobs(reference(ids, pad_mask=pad_mask, at=at), ids, response_mask)
    return policy_logps - ref_logps  # (B, T)


def format_token_logratios(tokenizer, ids, ratios):
    """One answer's token_logratios as a line to read: the sum, then each token with its share,
    "  -10.5 = ' The'-0.3 ' capital'+0.0 ...". ids (n,) and ratios (n,): the answer tokens only
    (pick them with the response mask)."""
    values = ratios.float().tolist()
    return f"{sum(values):+7.1f} = " + " ".join(
        f"{tokenizer.decode([token])!r}{value:+.1f}" for token, value in zip(ids.tolist(), values))


def implied_reward(policy_logps, ref_logps, beta):
    """DPO's implicit reward of a response, beta * log(pi / pi_ref), (B,), detached: a number to
    log and compare, like a reward model's score (up to the prompt's beta * log Z(x))."""
    return (beta * (policy_logps - ref_logps)).detach()


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta, label_smoothing=0.0):
    """The DPO loss per pair, with the implied rewards of both answers.

    Rafailov et al. 2023, eq. 7:
        loss = -log sigmoid(beta * (log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)))

    With label_smoothing = eps, conservative DPO (Mitchell 2023): if each label is wrong with
    probability eps, the expected loss over both readings of the pair is
        loss = -(1 - eps) * log sigmoid(z) - eps * log sigmoid(-z),   z = beta * margin,
    which stops pushing once sigmoid(z) reaches 1 - eps instead of driving z to infinity.

    All inputs (B,) summed log-probabilities (see response_logprob). Returns
    (losses (B,), chosen_rewards (B,), rejected_rewards (B,)). beta is the strength of the
    implicit KL leash: small beta lets the policy move far from the reference.
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratio = policy_rejected_logps - ref_rejected_logps  # (B,)
    z = beta * (chosen_logratio - rejected_logratio)  # (B,): the Bradley-Terry margin
    # logsigmoid, not log(sigmoid(.)): sigmoid rounds to 0 for z below about -100
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    chosen_rewards = implied_reward(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implied_reward(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta):
    """The IPO loss per pair (B,): squared distance of the log-ratio margin to 1 / (2 * beta).

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17 (their tau is our beta):
        h    = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)
        loss = (h - 1 / (2 * beta))^2

    Why: when a pair is always labelled the same way, DPO's loss only reaches 0 as h -> infinity,
    so the policy keeps drifting from the reference however large beta is. IPO stops at a finite
    margin, so beta really bounds the drift. Implementations usually feed IPO per-token mean
    log-probabilities (response_logprob(..., average=True)).
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratio = policy_rejected_logps - ref_rejected_logps  # (B,)
    return (chosen_logratio - rejected_logratio - 1.0 / (2.0 * beta)) ** 2


def chosen_nll(policy_chosen_logps, chosen_lengths):
    """Mean negative log-likelihood per token of the chosen answers, (B,): the SFT loss on them.

    Added to DPO's loss with a weight (RPO, Pang et al. 2024), it keeps the chosen answers
    probable. DPO alone only asks for a margin, and it often gets one by pushing both answers
    down, the rejected one faster; the probability that leaves goes to answers in neither set.
    The NLL term anchors the policy to answers the rater liked."""
    return -policy_chosen_logps / chosen_lengths.clamp(min=1)


def dpo_metrics(chosen_rewards, rejected_rewards):
    """Numbers to log from the implied rewards (B,): how often the chosen answer wins, by how
    much, and where each reward goes (both falling together is common in DPO and worth seeing)."""
    return {
        "accuracy": preference_accuracy(chosen_rewards, rejected_rewards),
        "margin": (chosen_rewards - rejected_rewards).mean().item(),
        "chosen": chosen_rewards.mean().item(),
        "rejected": rejected_rewards.mean().item(),
    }
