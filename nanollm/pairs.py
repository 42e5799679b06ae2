"""Preference pairs -> padded token batches: what a reward model and DPO read.

A pair is {"prompt", "chosen", "rejected"}: the prompt is a user's question (str) or a list of
messages ending with a user turn (formats.load_preferences), chosen and rejected are two answers.
Each answer becomes the chat template's rendering of the prompt followed by that answer:

    <|endoftext|> <|user|> Capital of France? <|end|> <|assistant|> Paris. <|end|>
    response_mask:   0    0      0   0     0     0        0         1     1    1

    rendered, report = render_pairs(tokenizer, pairs, block_size)   # tokenized once
    chosen, rejected = pair_batch(rendered[:8], tokenizer.pad)      # 8 pairs padded to one T
    chosen_ids, chosen_pad_mask, chosen_response_mask = chosen      # (B, T) each
    chosen_logps, rejected_logps = score_pairs(                     # DPO: log pi of each answer
        partial(response_logprob, policy), rendered[:8], tokenizer.pad)  # (B,) each
    chosen_rewards, rejected_rewards = score_pairs(                 # a reward model (reward.py)
        reward_model, rendered[:8], tokenizer.pad)

response_mask is True on the answer's tokens and on its closing <|end|> (an answer is also a
decision to stop), never on the prompt or the role token before the answer, never on padding.
Earlier assistant turns of a multi-turn prompt are prompt, so they are never in the mask either.

Rows are padded on the right, chosen and rejected to one common length T, so that score_pairs
can stack them into one forward pass of 2B rows. Right padding needs no care from causal attention
(a real token never looks ahead at padding); pad_mask still marks it, so that log-probabilities
there are exactly 0 (nanollm/logprobs.py) and a reward is never read from it.

Render once, batch many times: `render_pairs` tokenizes a whole data set, `pair_batch` pads any
selection of it. `score_pairs` is the one place that puts both answers of a batch through a model
as 2B rows and splits the scores again; a score is anything with one number per answer (DPO's
log-probability, a reward model's reward). `score_pair_dataset` does it for a whole data set.

A sequence longer than block_size loses its end (the prompt is kept whole, the answer is cut, its
<|end|> with it); a pair where either answer would keep no token is skipped. A pair whose two
answers are the same (spaces aside, or once cut to the context) is dropped too: it prefers
nothing, so its loss is the same whatever the model (a zero gradient that only dilutes the batch)
and no accuracy can count its tie. Every count is reported, never hidden, with the first few
dropped pairs named (by the file line that formats.load_preferences keeps, else by position); a
data set with no pair left is an error.

Simplification: the end is cut rather than the start of a long prompt, which is what the world's
short chats need; long multi-turn data would rather drop the oldest turns.
"""

from dataclasses import dataclass, field

import torch

from nanollm.chat import encode_content, render_prompt
from nanollm.errors import DataError
from nanollm.formats import name_places, remember


@dataclass
class PairReport:
    kept: int = 0
    truncated: int = 0  # kept, with one answer or both cut to block_size
    skipped: int = 0  # the prompt alone fills block_size: no answer token would be left
    identical: int = 0  # the same answer twice (spaces aside, or once cut): nothing to prefer
    skipped_at: list[int] = field(default_factory=list)  # the first few: file lines or positions
    identical_at: list[int] = field(default_factory=list)
    where: str = "pair"  # what the *_at lists count: "line" (of the file) or "pair" (1 = first)
    block_size: int = 0

    @property
    def dropped(self):
        """Pairs left out of the rendered list: with none, its rows line up with the pairs."""
        return self.skipped + self.identical

    def __str__(self):
        skipped = f"{self.skipped} skipped: no answer token within the context"
        if self.skipped:
            skipped += f" ({name_places(self.where, self.skipped_at, self.skipped)})"
        identical = f"identical chosen and rejected: {self.identical} pairs"
        if self.identical:
            identical += f" ({name_places(self.where, self.identical_at, self.identical)})"
        return (f"{self.kept} pairs ({self.truncated} truncated to the context; {skipped}; "
                f"{identical})")


def prompt_messages(prompt):
    """A question as text, or a list of messages, -> a list of messages."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_response(tokenizer, prompt_ids, response):
    """(ids, response_mask) lists: the rendered prompt, then the answer and <|end|>."""
    response_ids = encode_content(tokenizer, response) + [tokenizer.end]
    return prompt_ids + response_ids, [False] * len(prompt_ids) + [True] * len(response_ids)


def no_pair_left(report, what, n_pairs):
    """The DataError for a data set of which no pair is left, saying why each was dropped."""
    if not n_pairs:
        return DataError(f"no {what}: the list is empty; give at least one preference pair")
    reasons, fixes = [], []
    if report.identical:
        places = name_places(report.where, report.identical_at, report.identical)
        reasons.append(f"{report.identical} with identical chosen and rejected ({places})")
        fixes.append("give two different answers")
    if report.skipped:
        places = name_places(report.where, report.skipped_at, report.skipped)
        reasons.append(f"{report.skipped} whose prompt alone fills the context of "
                       f"{report.block_size} tokens ({places})")
        fixes.append("shorten the prompts")
    return DataError(f"no pair fits: all {n_pairs} {what} were dropped, {', '.join(reasons)}; "
                     f"{' and '.join(fixes)}")


def render_pairs(tokenizer, pairs, block_size, what="pairs"):
    """Tokenize every pair once: (list of (chosen, rejected), PairReport), where chosen and
    rejected are (ids, response_mask) lists of at most block_size tokens. Pairs of identical
    answers are dropped; none left is a DataError, whose message calls the set `what`."""
    report = PairReport(block_size=block_size)
    if pairs and all("line" in pair for pair in pairs):
        report.where = "line"
    rendered = []
    for position, pair in enumerate(pairs, start=1):
        place = pair["line"] if report.where == "line" else position
        if pair["chosen"].strip() == pair["rejected"].strip():
            report.identical += 1
            remember(report.identical_at, place)
            continue
        prompt_ids = render_prompt(tokenizer, prompt_messages(pair["prompt"]))
        if len(prompt_ids) >= block_size:
            report.skipped += 1
            remember(report.skipped_at, place)
            continue
        sides = [render_response(tokenizer, prompt_ids, pair[key])
                 for key in ("chosen", "rejected")]
        if any(len(ids) > block_size for ids, _ in sides):
            sides = [(ids[:block_size], mask[:block_size]) for ids, mask in sides]
            if sides[0] == sides[1]:  # the answers differ only after the cut
                report.identical += 1
                remember(report.identical_at, place)
                continue
            report.truncated += 1
        rendered.append(tuple(sides))
        report.kept += 1
    if not rendered:
        raise no_pair_left(report, what, len(pairs))
    return rendered, report


def pad_right(sequences, pad_id, length, device="cpu"):
    """(ids, response_mask) lists -> ids, pad_mask, response_mask, each (B, length)."""
    B = len(sequences)
    ids = torch.full((B, length), pad_id, dtype=torch.long)
    pad_mask = torch.zeros(B, length, dtype=torch.bool)
    response_mask = torch.zeros(B, length, dtype=torch.bool)
    for row, (seq, mask) in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        pad_mask[row, :len(seq)] = True
        response_mask[row, :len(seq)] = torch.tensor(mask)
    return ids.to(device), pad_mask.to(device), response_mask.to(device)


def pair_batch(rendered, pad_id, device="cpu"):
    """Rendered pairs (from render_pairs) -> (chosen, rejected), each a tuple
    (ids, pad_mask, response_mask) of (B, T) tensors, both padded to the same T."""
    T = max(len(ids) for pair in rendered for ids, _ in pair)
    chosen = pad_right([c for c, _ in rendered], pad_id, T, device)
    rejected = pad_right([r for _, r in rendered], pad_id, T, device)
    return chosen, rejected


def score_pairs(score, rendered, pad_id, device="cpu"):
    """Score both answers of rendered pairs in one batch of 2B rows, padded to one length:
    score(ids, pad_mask, response_mask) -> (2B,) for (2B, T) inputs. Returns the chosen and the
    rejected answers' scores, (B,) float each. Reward models (a score per answer) and DPO (a
    log-probability per answer) both read pairs this way; padding changes no row's score."""
    chosen, rejected = pair_batch(rendered, pad_id, device)
    ids, pad_mask, response_mask = (torch.cat(sides) for sides in zip(chosen, rejected))  # (2B, T)
    return score(ids, pad_mask, response_mask).float().chunk(2)  # (B,), (B,)


@torch.no_grad()
def score_pair_dataset(score, rendered, pad_id, device="cpu", batch_size=64):
    """score_pairs over a whole data set, batch_size pairs at a time, without gradients:
    (chosen (N,), rejected (N,)) float. Evaluation mode and autocast are the caller's to set."""
    chunks = [score_pairs(score, rendered[i:i + batch_size], pad_id, device)
              for i in range(0, len(rendered), batch_size)]
    return torch.cat([c for c, _ in chunks]), torch.cat([r for _, r in chunks])


def render_pair_batch(tokenizer, pairs, block_size, device="cpu"):
    """Pairs -> (chosen, rejected, PairReport) in one call; see render_pairs and pair_batch.
    Dropped pairs are left out, so the batch may have fewer rows than `pairs`."""
    rendered, report = render_pairs(tokenizer, pairs, block_size)
    chosen, rejected = pair_batch(rendered, tokenizer.pad, device)
    return chosen, rejected, report
