"""Rollouts: the policy answers a batch of prompts, and every token of the answers gets its numbers.

This is the first block of a PPO iteration (see nanollm/ppo.py), gathered in one place so that
train_rlhf.py and the lessons run exactly the same thing:

    batch = rollout(policy, reference, critic, reward_model, prompts, max_new_tokens=48,
                    stop_ids=[tokenizer.end, tokenizer.eot], pad_id=tokenizer.pad)
    batch.ids, batch.pad_mask, batch.response_mask     (B, T) as from generate()
    batch.logprobs, batch.ref_logprobs, batch.values    (B, T) policy, reference, critic
    batch.scores                                        (B,)   the reward model's verdict
    texts = response_texts(tokenizer, batch.responses())

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

from nanollm.generate import generate
from nanollm.logprobs import sequence_logprobs
from nanollm.ppo import entropy_from_logits, state_values
from nanollm.reward import last_token_index, sequence_rewards


@dataclass
class Rollout:
    ids: torch.Tensor  # (B, T) left-padded prompts, then the sampled answers
    pad_mask: torch.Tensor  # (B, T) bool, True on real tokens
    response_mask: torch.Tensor  # (B, T) bool, True on sampled tokens (the stop token included)
    logprobs: torch.Tensor  # (B, T) log pi_old(token), 0 outside response and prompt
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(token)
    values: torch.Tensor  # (B, T) V(state before the token), from the critic
    scores: torch.Tensor  # (B,) reward model's score of each whole answer
    finished: torch.Tensor  # (B,) bool: the answer ended with a stop token
    entropy: float  # mean entropy (nats) of the distributions the answers were sampled from

    def responses(self):
        """The sampled ids of each row, as lists (stop token included where one was made)."""
        return [row[m].tolist() for row, m in zip(self.ids, self.response_mask)]


@torch.no_grad()
def rollout(policy, reference, critic, reward_model, prompts, max_new_tokens, stop_ids, pad_id,
            autocast=nullcontext, generator=None):
    """Sample one answer per prompt (lists of ids) from the policy at temperature 1, then score
    every answer token with the four models. Returns a Rollout; nothing in it carries gradients.

    autocast: a context-manager factory (runtime.autocast) for low-precision matrix products.
    """
    with autocast():
        out = generate(policy, prompts, max_new_tokens, temperature=1.0, stop_ids=stop_ids,
                       pad_id=pad_id, generator=generator)
        logits = policy(out.ids, pad_mask=out.pad_mask)  # (B, T, V)
        # logits[:, t] is the distribution token t + 1 was drawn from
        entropy = entropy_from_logits(logits[:, :-1], out.response_mask[:, 1:]).item()
        logprobs = sequence_logprobs(policy, out.ids, out.pad_mask)  # (B, T)
        ref_logprobs = sequence_logprobs(reference, out.ids, out.pad_mask)  # (B, T)
        values = state_values(critic, out.ids, out.pad_mask)  # (B, T)
        scores = sequence_rewards(reward_model, out.ids, out.pad_mask, out.response_mask)  # (B,)
    last_token = out.ids.gather(1, last_token_index(out.response_mask)[:, None])[:, 0]  # (B,)
    finished = torch.isin(last_token, torch.tensor(list(stop_ids), device=out.ids.device))
    return Rollout(ids=out.ids, pad_mask=out.pad_mask, response_mask=out.response_mask,
                   logprobs=logprobs.float(), ref_logprobs=ref_logprobs.float(),
                   values=values.float(), scores=scores.float(), finished=finished,
                   entropy=entropy)


def response_texts(tokenizer, responses):
    """Answers (lists of ids) as text, stop tokens left out: what the gold rater reads."""
    stop_ids = {tokenizer.end, tokenizer.eot}
    return [tokenizer.decode([t for t in ids if t not in stop_ids]) for ids in responses]


@torch.no_grad()
def greedy_answers(model, reward_model, prompts, max_new_tokens, stop_ids, pad_id,
                   autocast=nullcontext, batch_size=64):
    """The model's greedy answer to each prompt, and the reward model's score of it.

    Returns (list of response id-lists, scores (N,)): evaluation's counterpart of rollout().
    """
    responses, scores = [], []
    for i in range(0, len(prompts), batch_size):
        with autocast():
            out = generate(model, prompts[i:i + batch_size], max_new_tokens, temperature=0.0,
                           stop_ids=stop_ids, pad_id=pad_id)
            scores.append(sequence_rewards(reward_model, out.ids, out.pad_mask,
                                           out.response_mask).float())
        responses += out.responses()
    return responses, torch.cat(scores)
