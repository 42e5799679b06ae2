"""Rollouts: the policy answers a batch of prompts, and every token of the answers gets its numbers.

This is the first block of a PPO iteration (see nanollm/ppo.py), gathered in one place so that
train_rlhf.py and the lessons run exactly the same thing:

    batch = rollout(policy, reference, critic, reward_model, prompts, max_new_tokens=48,
                    stop_ids=[tokenizer.end, tokenizer.eot], pad_id=tokenizer.pad)
    batch.ids, batch.pad_mask, batch.response_mask     (B, T) as from generate()
    batch.logprobs, batch.ref_logprobs, batch.values    (B, T) policy, reference, critic
    batch.rewards, batch.scores                         (B, T), (B,) the reward model's verdict
    texts = response_texts(tokenizer, batch.responses())

A relative: greedy_answers (evaluation: temperature 0, with the reward model's score). The world
samples its preference pairs the same way (nanollm/world/preferences.py).

PPO's prompts are (ids, question) pairs: question_prompts renders world questions (the question
carries its fact, so the gold rater can judge the answers), pair_prompts a preference file's
prompts (no rater can), and prompts_that_fit drops, and counts, those too long for an answer.

Why temperature 1 and no top-k or top-p: PPO's ratios and the KL to the reference are computed
from the plain softmax of the policy (nanollm/logprobs.py). Tokens sampled from a sharpened or
truncated distribution would come from a different policy than the one those numbers describe.

Where it simplifies:
1. The policy's log-probabilities are recomputed with a full forward pass after generating,
   rather than kept from the sampling loop (which ran through the KV cache); the two agree up to
   rounding, and recomputing keeps generate() free of PPO's needs.
2. Every model reads the full padded grid, prompt included (see ppo.py, simplification 4).
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from nanollm.chat import decode_content, render_prompt, render_question
from nanollm.errors import ConfigError
from nanollm.generate import generate
from nanollm.logprobs import sequence_logprobs
from nanollm.pairs import prompt_messages
from nanollm.ppo import entropy_from_logits, state_values
from nanollm.reward import last_token_index


@dataclass
class Rollout:
    ids: torch.Tensor  # (B, T) left-padded prompts, then the sampled answers
    pad_mask: torch.Tensor  # (B, T) bool, True on real tokens
    response_mask: torch.Tensor  # (B, T) bool, True on sampled tokens (the stop token included)
    logprobs: torch.Tensor  # (B, T) log pi_old(token), 0 outside response and prompt
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(token)
    values: torch.Tensor  # (B, T) V(state before the token), from the critic
    rewards: torch.Tensor  # (B, T) the reward model's reward on each token (its token_rewards)
    finished: torch.Tensor  # (B,) bool: the answer ended with a stop token
    entropy: float  # mean entropy (nats) of the distributions the answers were sampled from

    @property
    def scores(self):
        """(B,) the reward model's score of each whole answer: its token rewards summed."""
        return self.rewards.sum(1)

    def responses(self):
        """The sampled ids of each row, as lists (stop token included where one was made)."""
        return [row[m].tolist() for row, m in zip(self.ids, self.response_mask)]


@torch.no_grad()
def rollout(policy, reference, critic, reward_model, prompts, max_new_tokens, stop_ids, pad_id,
            autocast=nullcontext, generator=None):
    """Sample one answer per prompt (lists of ids) from the policy at temperature 1, then score
    every answer token with the four models. Returns a Rollout; nothing in it carries gradients.

    autocast: a context-manager factory (runtime.autocast) for low-precision matrix products.
    critic or reward_model may be None (GRPO has no critic; a verifiable reward reads the text
    afterwards): their values or rewards are then zeros.
    """
    with autocast():
        out = generate(policy, prompts, max_new_tokens, temperature=1.0, stop_ids=stop_ids,
                       pad_id=pad_id, generator=generator)
        logits = policy(out.ids, pad_mask=out.pad_mask)  # (B, T, V)
        # logits[:, t] is the distribution token t + 1 was drawn from
        entropy = entropy_from_logits(logits[:, :-1], out.response_mask[:, 1:]).item()
        logprobs = sequence_logprobs(policy, out.ids, out.pad_mask)  # (B, T)
        ref_logprobs = sequence_logprobs(reference, out.ids, out.pad_mask)  # (B, T)
        # no critic (GRPO) or no reward model (a reward computed from the text): zeros
        values = (state_values(critic, out.ids, out.pad_mask) if critic is not None
                  else torch.zeros_like(logprobs))  # (B, T)
        rewards = (reward_model.token_rewards(out.ids, out.pad_mask, out.response_mask)
                   if reward_model is not None else torch.zeros_like(logprobs))  # (B, T)
    last_token = out.ids.gather(1, last_token_index(out.response_mask)[:, None])[:, 0]  # (B,)
    finished = torch.isin(last_token, torch.tensor(list(stop_ids), device=out.ids.device))
    return Rollout(ids=out.ids, pad_mask=out.pad_mask, response_mask=out.response_mask,
                   logprobs=logprobs.float(), ref_logprobs=ref_logprobs.float(),
                   values=values.float(), rewards=rewards.float(), finished=finished,
                   entropy=entropy)


def question_prompts(tokenizer, questions):
    """World questions -> (prompt ids, question) pairs. The question carries its fact, so the gold
    rater can judge whatever the policy answers."""
    return [(render_question(tokenizer, q.text), q) for q in questions]


def pair_prompts(tokenizer, pairs):
    """The distinct prompts of preference pairs as (prompt ids, None): no rater can judge them."""
    unique = {str(p["prompt"]): p["prompt"] for p in pairs}
    return [(render_prompt(tokenizer, prompt_messages(prompt)), None) for prompt in unique.values()]


def prompts_that_fit(prompts, max_new_tokens, block_size):
    """The (ids, question) prompts that leave room for max_new_tokens in the context. The number
    skipped is printed; none left is an error."""
    fits = [p for p in prompts if len(p[0]) + max_new_tokens <= block_size]
    if len(fits) < len(prompts):
        print(f"{len(prompts) - len(fits)} prompts skipped: prompt + --max_new_tokens "
              f"{max_new_tokens} exceeds block_size {block_size}")
    if not fits:
        raise ConfigError(f"no prompt fits in the context of {block_size} tokens with "
                          f"--max_new_tokens {max_new_tokens}: lower --max_new_tokens")
    return fits


def response_texts(tokenizer, responses):
    """Answers (lists of ids) as text, stop tokens left out: what the gold rater reads."""
    return [decode_content(tokenizer, ids) for ids in responses]


@torch.no_grad()
def greedy_answers(model, reward_model, prompts, max_new_tokens, stop_ids, pad_id,
                   autocast=nullcontext, batch_size=64):
    """The model's greedy answer to each prompt, and the reward model's score of it.

    Returns (list of response id-lists, scores (N,)): evaluation's counterpart of rollout();
    with no reward model the scores are zeros.
    """
    responses, scores = [], []
    for i in range(0, len(prompts), batch_size):
        with autocast():
            out = generate(model, prompts[i:i + batch_size], max_new_tokens, temperature=0.0,
                           stop_ids=stop_ids, pad_id=pad_id)
            scores.append(reward_model(out.ids, out.pad_mask, out.response_mask).float()
                          if reward_model is not None else out.ids.new_zeros(len(out.ids)).float())
        responses += out.responses()
    return responses, torch.cat(scores)
