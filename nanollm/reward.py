"""The reward model: a GPT trunk with a scalar head, trained so that preferred answers score higher.

A rater never gives numbers, only comparisons ("answer A is better than answer B"). The
Bradley-Terry model turns scores into comparisons, so a reward model can be fitted to them:

    P(chosen preferred over rejected) = sigmoid(r_chosen - r_rejected)

Training maximises the log-likelihood of the observed preferences (InstructGPT, Ouyang et al. 2022,
eq. 1). Only the difference of two scores is ever seen, so the scale's origin is arbitrary.

    reward_model = RewardModel(sft_model)                                  # head starts at 0
    rewards = reward_model(ids, pad_mask, response_mask)                   # (B,)
    per_token = reward_model.token_rewards(ids, pad_mask, response_mask)   # (B, T), for PPO
    chosen, rejected = score_pairs(reward_model, rendered_pairs, pad_id)   # nanollm/pairs.py
    loss = bradley_terry_loss(chosen, rejected)
    save_reward_model(out_dir, reward_model, tokenizer, cfg, step)         # stage "reward"
    reward_model, tokenizer, state = load_reward_model(out_dir)

Where it simplifies compared with InstructGPT:
1. One comparison per prompt and batch row; InstructGPT ranks K answers per prompt and trains on
   all K*(K-1)/2 pairs of a prompt in one batch element, so the prompt is encoded once.
2. Normalisation afterwards (normalise_reward_head) uses the training answers' scores, shifted to
   mean 0 and scaled to std 1; InstructGPT only shifts, so that labellers' demonstrations score 0.
3. The score is read at the last response token only; no pooling over the response.

A variant, one flag away (RewardModel(likelihood=True), train_reward.py --rm_likelihood): the
reward also counts each answer token's log-likelihood under the trunk's own language head, times
a weight read from the state before the token (RewardModel.likelihood_rewards says why).
"""

from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm.logprobs import answer_logprobs, predicts_answer
from nanollm.optim import weight_decay_groups
from nanollm.pairs import render_pairs, score_pair_dataset
from nanollm.stages import load_stage_state, save_stage, trunk_from_state
from nanollm.tokenizer import Tokenizer

LIKELIHOOD_FLOOR = -10.0  # nats: a token's log-likelihood counts down to here (likelihood_rewards)
LIKELIHOOD_LR = 3e-2  # peak learning rate of the weight every answer token shares


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


def answer_token_logprobs(gpt, hidden, ids, response_mask):
    """log p(token | all before it) under the GPT's own language head, on every response token,
    0 elsewhere: (B, T) float32. hidden (B, T, C) are the GPT's states for ids (B, T); only
    the states that predict an answer token go through the (C -> V) head."""
    logits = gpt.lm_head(hidden[predicts_answer(response_mask)]).float()  # (N, V)
    return answer_logprobs(logits, ids, response_mask)  # (B, T)


class RewardModel(nn.Module):
    """InstructGPT's reward model: a GPT trunk, and a (C -> 1) head that reads the state at the
    answer's last token. The head starts at zero, so before training no answer is preferred.

    likelihood=True adds a second (C -> 1) head, the likelihood weight (likelihood_rewards).
    """

    def __init__(self, gpt, likelihood=False):
        super().__init__()
        self.gpt = gpt
        C = gpt.config.n_embd
        self.head = nn.Linear(C, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.likelihood_weight = nn.Linear(C, 1) if likelihood else None
        if likelihood:  # also 0 at the start: the reward begins as the plain head's
            nn.init.zeros_(self.likelihood_weight.weight)
            nn.init.zeros_(self.likelihood_weight.bias)

    @property
    def config(self):
        """The trunk's GPTConfig (what a checkpoint stores to rebuild it)."""
        return self.gpt.config

    @property
    def likelihood(self):
        """Is this the likelihood-weighted variant?"""
        return self.likelihood_weight is not None

    def forward(self, ids, pad_mask, response_mask):
        """The reward of each answer, (B,): the head applied to the state at the answer's last
        token (its closing <|end|>), plus the likelihood terms when the model has them.

        Why the last answer token: its state is the only one that has seen the prompt and the
        complete answer, the decision to stop included, so it is the one place that can judge
        the answer as a whole. The last column would be padding in a right-padded row."""
        hidden = self.gpt.hidden(ids, pad_mask=pad_mask)  # (B, T, C)
        last = last_token_index(response_mask)  # (B,)
        rewards = self.head(hidden[torch.arange(len(last)), last]).squeeze(-1)  # (B,)
        if self.likelihood:
            rewards = rewards + self.likelihood_rewards(hidden, ids, response_mask).sum(1)
        return rewards

    def token_rewards(self, ids, pad_mask, response_mask):
        """The same reward placed on the answer's tokens, (B, T); a row sums to forward's.

        Plain: the head's score on the last answer token, 0 elsewhere. PPO pays it there, as
        InstructGPT does (ppo.kl_penalised_rewards).

        With the likelihood weight, every answer token t also earns w_t * log p(token t), paid
        where the token stands: paid all at the end, it would surprise a critic that starts from
        the head alone, and GAE would credit the early tokens of a long answer for it.
        """
        hidden = self.gpt.hidden(ids, pad_mask=pad_mask)  # (B, T, C)
        scores = self.head(hidden).squeeze(-1)  # (B, T)
        last = last_token_index(response_mask)[:, None]  # (B, 1)
        rewards = torch.zeros_like(scores).scatter(1, last, scores.gather(1, last))  # (B, T)
        if self.likelihood:
            rewards = rewards + self.likelihood_rewards(hidden, ids, response_mask)
        return rewards

    def likelihood_rewards(self, hidden, ids, response_mask):
        """w_t * max(log p(token t | all before it), LIKELIHOOD_FLOOR) on every answer token t,
        0 elsewhere: (B, T). hidden (B, T, C) are the trunk's states for ids (B, T).

        Why: the head learns what a right answer is from the pairs it is shown, which name
        taught entities only; the language head still knows the held-out facts from pretraining,
        and the weight lets the reward use that knowledge. Why per token: one weight for every
        token would also count the phrasing, so an unusual wording would look as unlikely as a
        wrong fact. Why from state t - 1: the weight is then fixed before token t is chosen; read
        from state t, it would be a weight the policy picks with its token. Why a floor: below it
        a token is one the model would never write, and how far below says nothing more.
        """
        w = F.pad(self.likelihood_weight(hidden[:, :-1]).squeeze(-1), (1, 0))  # (B, T)
        logprobs = answer_token_logprobs(self.gpt, hidden, ids, response_mask)  # (B, T)
        return w * logprobs.clamp(min=LIKELIHOOD_FLOOR)  # 0 off the answer: logprobs are 0

    def configure_optimizer(self, weight_decay, lr, betas=(0.9, 0.95), fused=False):
        """AdamW over trunk and heads, matrices decayed (optim.weight_decay_groups).

        With the likelihood weight, its bias (the weight every answer token shares) gets its own
        peak rate LIKELIHOOD_LR on the trunk's schedule (set_lr keeps the ratio): Adam moves a
        parameter by about lr per step whatever its gradient, and this one number must travel
        much further than the trunk's small fine-tuning rate would take it."""
        shared = self.likelihood_weight.bias if self.likelihood else None
        groups = weight_decay_groups([p for p in self.parameters() if p is not shared],
                                     weight_decay)
        if shared is not None and shared.requires_grad:
            groups.append({"params": [shared], "weight_decay": 0.0, "lr": LIKELIHOOD_LR,
                           "lr_scale": LIKELIHOOD_LR / lr})
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def pair_rewards(model, rendered, pad_id, autocast=nullcontext, batch_size=128):
    """The rewards of both answers of every rendered pair (pairs.render_pairs), in eval mode and
    without gradients (pairs.score_pair_dataset): (chosen (N,), rejected (N,))."""
    was_training = model.training
    model.eval()
    with autocast():
        rewards = score_pair_dataset(model, rendered, pad_id, next(model.parameters()).device,
                                     batch_size)
    model.train(was_training)
    return rewards


def label_pairs(model, tokenizer, pairs, batch_size=128):
    """The pairs as the reward model would label them, for a model in the rater's place (RLAIF):
    each pair's two answers ordered by the model's rewards, the higher one chosen. Returns
    (relabelled pairs, the share of pairs whose label it kept). Pairs must hold two different
    answers."""
    rendered, report = render_pairs(tokenizer, pairs, model.config.block_size)
    if report.kept != len(pairs):
        raise ValueError(f"{len(pairs) - report.kept} of the pairs could not be scored as they "
                         f"are ({report}); drop them first")
    chosen, rejected = pair_rewards(model, rendered, tokenizer.pad, batch_size=batch_size)
    keep = (chosen >= rejected).tolist()
    relabelled = [pair if k else {**pair, "chosen": pair["rejected"], "rejected": pair["chosen"],
                                  "chosen_style": pair.get("rejected_style"),
                                  "rejected_style": pair.get("chosen_style")}
                  for pair, k in zip(pairs, keep)]
    return relabelled, sum(keep) / len(keep)


def preference_accuracy(chosen_rewards, rejected_rewards):
    """Share of pairs in which the chosen answer scores strictly higher (a tie counts as wrong)."""
    return (chosen_rewards > rejected_rewards).float().mean().item()


@torch.no_grad()
def normalise_reward_head(model, scores):
    """Fold a shift and a scale into the heads, so that the answers whose current rewards are
    `scores` (B,) score with mean 0 and standard deviation 1 afterwards.

        r_new = (r - mean) / std   <=>   weights and w divided by std,  b_new = (b - mean) / std

    Why: Bradley-Terry only fixes differences of scores, so a reward model's offset is arbitrary
    and its scale is whatever training reached. PPO's KL coefficient beta trades nats of KL
    against units of reward; with rewards in units of their standard deviation, one beta means the
    same for every reward model (a flawed one included). Ranking and accuracy are unchanged.
    """
    mean, std = scores.float().mean(), scores.float().std().clamp(min=1e-6)
    model.head.weight.div_(std)
    model.head.bias.sub_(mean).div_(std)
    if model.likelihood:
        model.likelihood_weight.weight.div_(std)
        model.likelihood_weight.bias.div_(std)


# -----------------------------------------------------------------------------
# Stage "reward" on disk: the trunk's config and the whole state dict, as any stage


def save_reward_model(out_dir, model, tokenizer, cfg, step, **extra):
    """Write stage "reward" (nanollm/stages.py), recording whether it has a likelihood weight."""
    return save_stage(out_dir, "reward", model, tokenizer, cfg, step,
                      likelihood=model.likelihood, **extra)


def load_reward_model(out_dir, device="cpu"):
    """(reward model, tokenizer, checkpoint) of stage "reward", the model in eval mode."""
    state = load_stage_state(out_dir, "reward")
    model = RewardModel(trunk_from_state(state), likelihood=state["likelihood"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Tokenizer.from_dict(state["tokenizer"]), state
