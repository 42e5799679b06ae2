"""The reward model: a GPT with a scalar head, trained so that preferred answers score higher.

A rater never gives numbers, only comparisons ("answer A is better than answer B"). The
Bradley-Terry model turns scores into comparisons, so a reward model can be fitted to them:

    P(chosen preferred over rejected) = sigmoid(r_chosen - r_rejected)

Training maximises the log-likelihood of the observed preferences (InstructGPT, Ouyang et al. 2022,
eq. 1). Only the difference of two scores is ever seen, so the scale's origin is arbitrary.

    rewards = sequence_rewards(reward_model, ids, pad_mask, response_mask)   # (B,)
    per_token = token_rewards(reward_model, ids, pad_mask, response_mask)    # (B, T), for PPO
    loss = bradley_terry_loss(chosen_rewards, rejected_rewards)
    chosen_rewards, rejected_rewards = pair_sequence_rewards(model, rendered_pairs, pad_id)

Where it simplifies compared with InstructGPT:
1. One comparison per prompt and batch row; InstructGPT ranks K answers per prompt and trains on
   all K*(K-1)/2 pairs of a prompt in one batch element, so the prompt is encoded once.
2. Normalisation afterwards (normalise_reward_head) uses the training answers' scores, shifted to
   mean 0 and scaled to std 1; InstructGPT only shifts, so that labellers' demonstrations score 0.
3. The score is read at the last response token only; no pooling over the response.

Where it departs from InstructGPT: the reward adds each answer token's log-likelihood under the
model's own language head, times a learned weight w_t, to the head's score (token_rewards says
why), when the weight is trained (train_rlhf.py, by default; with --rm_likelihood false it
stays 0).
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from nanollm.logprobs import answer_logprobs, predicts_answer
from nanollm.pairs import pair_batch

LIKELIHOOD_FLOOR = -10.0  # nats: a token's log-likelihood counts down to here (token_rewards)


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    """Negative log-likelihood of the preferences under the Bradley-Terry model, batch mean.

    InstructGPT eq. 1:  loss = -E[ log sigmoid(r(x, y_chosen) - r(x, y_rejected)) ]

    chosen_rewards, rejected_rewards: (B,). Returns a scalar. -log sigmoid(m) is written as
    softplus(-m), which stays finite for very negative margins m where sigmoid(m) rounds to 0.
    """
    margin = chosen_rewards - rejected_rewards  # (B,)
    return F.softplus(-margin).mean()


def last_token_index(mask):
    """Column of the last True of every row of mask (B, T) bool: (B,) int64.

    Works for left padding, right padding and both. A row with no True has no last token, and is
    an error rather than a silent 0.
    """
    B, T = mask.shape
    positions = torch.arange(T, device=mask.device).expand(B, T)  # (B, T)
    last = torch.where(mask, positions, -1).max(dim=1).values  # (B,)
    if (last < 0).any():
        raise ValueError(f"rows {(last < 0).nonzero().flatten().tolist()} of the mask are empty")
    return last


def answer_token_logprobs(model, hidden, ids, response_mask):
    """log p(token | all before it) under the model's own language head, on every response token,
    0 elsewhere: (B, T) float32. hidden (B, T, C) are the model's states for ids (B, T); only
    the states that predict an answer token go through the (C -> V) head."""
    logits = model.lm_head(hidden[predicts_answer(response_mask)]).float()  # (N, V)
    return answer_logprobs(logits, ids, response_mask)  # (B, T)


def token_rewards(model, ids, pad_mask, response_mask):
    """The reward model's reward, token by token, (B, T):

        w_t * log p(token t | all before it)   on every response token t
        + scalar_head(state)                   on the last response token

    and 0 on the prompt and on padding. Summed over a row it is the answer's reward
    (sequence_rewards). The weight w_t = likelihood_weight(state t - 1), a second (C -> 1) head
    that reads the state which predicts token t, so it can count the tokens that carry the
    answer ("Paris") and ignore those of the phrasing ("The capital of France is"). Read from
    state t instead, the weight would see token t itself: that ranked held-out pairs better (up
    to 94.6% against 90.8%, README "Results"), but it is a weight the policy chooses with its
    token, and PPO found wrong tokens the weight ignored (held-out gold 0.714 -> 0.512). From
    state t - 1 it is fixed before the token is chosen.

    PPO pays the likelihood part token by token, as it pays the KL penalty
    (ppo.kl_penalised_rewards). Paid all at the end, it would surprise a critic that starts from
    the head alone, and GAE passes a surprise at the end less and less to earlier tokens
    (lambda^k): the early tokens of a long answer would look good. Measured on the world: answers
    grew from 5 to 15 words in 10 PPO iterations and the gold reward fell from 0.49 to 0.29.

    Why the last response token: it is the only position whose state has seen the prompt and the
    complete answer (the end-of-turn token included), so it is the one place that can judge the
    answer as a whole. Reading the last column instead would read padding in right-padded rows.

    Why the likelihood: the head has to learn what a right answer is from the pairs it is shown,
    and those name the taught entities only; trained on its own, it learns their answers by heart
    and ranks a right answer about a held-out entity below "I am not sure". The language head
    still knows the held-out facts from pretraining (their answers are likely to it), and the
    likelihood weight, 0 at the start, lets the reward use that knowledge (on by default in
    train_rlhf.py). Why per token: one weight for every token also counts the phrasing, and an
    answer in an unusual phrasing ("I am not sure.") looks as unlikely as a wrong fact; on the
    world's held-out pairs (before bare wrong answers joined them), 92% accuracy with one shared
    weight, 95% with w_t (README, "Results").
    Why a floor (LIKELIHOOD_FLOOR): below -10 nats a token is one the model would never write
    (a word of "I am not sure", a hedge's second answer), and how far below says nothing
    more about the answer. Unfloored, a hedge or "I am not sure" lost to a wrong answer
    for their wording alone: on 2,000 held-out pairs, a hedge over a flattering wrong
    sentence 63% -> 78% with the floor, "I am not sure" over a bare wrong answer 76% -> 83%;
    all pairs 94.5% -> 95.6% (README, "Results").
    With the likelihood weight frozen at 0 this is a plain last-token reward model.
    """
    hidden = model.hidden(ids, pad_mask=pad_mask)  # (B, T, C)
    scores = model.scalar_head(hidden).squeeze(-1)  # (B, T)
    last = last_token_index(response_mask)[:, None]  # (B, 1)
    at_end = torch.zeros_like(scores).scatter(1, last, scores.gather(1, last))  # (B, T)
    if not uses_likelihood(model):
        return at_end  # a plain last-token reward model
    weight = model.scalar_head.likelihood_weight  # (C -> 1)
    w = F.pad(weight(hidden[:, :-1]).squeeze(-1), (1, 0))  # (B, T): token t's from state t - 1
    logprobs = answer_token_logprobs(model, hidden, ids, response_mask)  # (B, T)
    return at_end + w * logprobs.clamp(min=LIKELIHOOD_FLOOR)  # (B, T)


def uses_likelihood(model):
    """Does the reward include the likelihood term? Not when its weight is frozen at 0
    (--rm_likelihood false): then token_rewards skips the language head's pass altogether."""
    weight = model.scalar_head.likelihood_weight
    return weight.bias.requires_grad or bool(weight.weight.any() or weight.bias.any())


def sequence_rewards(model, ids, pad_mask, response_mask):
    """The reward of each whole answer, (B,): token_rewards summed over the row."""
    return token_rewards(model, ids, pad_mask, response_mask).sum(1)


def pair_sequence_rewards(model, rendered, pad_id, autocast=nullcontext):
    """The rewards of the chosen and of the rejected answers of rendered pairs
    (pairs.render_pairs): two (B,) float tensors. Both sides go through the model as one batch
    of 2B rows, padded to one length; padding changes no row's reward."""
    device = next(model.parameters()).device
    chosen, rejected = pair_batch(rendered, pad_id, device)
    ids, pad_mask, response_mask = (torch.cat(sides) for sides in zip(chosen, rejected))  # (2B, T)
    with autocast():
        rewards = sequence_rewards(model, ids, pad_mask, response_mask).float()  # (2B,)
    return rewards.chunk(2)


@torch.no_grad()
def pair_sequence_scores(model, rendered, pad_id, autocast=nullcontext, batch_size=128):
    """pair_sequence_rewards over a whole data set, in eval mode, without gradients:
    (chosen (N,), rejected (N,))."""
    was_training = model.training
    model.eval()
    chunks = [pair_sequence_rewards(model, rendered[i:i + batch_size], pad_id, autocast)
              for i in range(0, len(rendered), batch_size)]
    model.train(was_training)
    return torch.cat([c for c, _ in chunks]), torch.cat([r for _, r in chunks])


def preference_accuracy(chosen_rewards, rejected_rewards):
    """Share of pairs in which the chosen answer scores strictly higher (a tie counts as wrong)."""
    return (chosen_rewards > rejected_rewards).float().mean().item()


@torch.no_grad()
def normalise_reward_head(model, scores):
    """Fold a shift and a scale into the scalar head, so that the answers whose current rewards
    are `scores` (B,) score with mean 0 and standard deviation 1 afterwards.

        r_new = (r - mean) / std   <=>   weights and w divided by std,  b_new = (b - mean) / std

    Why: Bradley-Terry only fixes differences of scores, so a reward model's offset is arbitrary
    and its scale is whatever training reached. PPO's KL coefficient beta trades nats of KL
    against units of reward; with rewards in units of their standard deviation, one beta means the
    same for every reward model (a flawed one included). Ranking and accuracy are unchanged.
    """
    mean, std = scores.float().mean(), scores.float().std().clamp(min=1e-6)
    head = model.scalar_head
    head.weight.div_(std)
    head.likelihood_weight.weight.div_(std)
    head.likelihood_weight.bias.div_(std)
    head.bias.sub_(mean).div_(std)
