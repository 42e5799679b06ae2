"""SFT data: conversations -> token ids with assistant-only targets -> padded batches.

    examples, report = sft_examples(tokenizer, conversations, block_size)
    x, y = sft_batch([examples[i] for i in rows], pad_id)   # (B, T) each; y is IGNORE_INDEX
                                                            # wherever nothing is learned
Why padding and not packing (as pretraining does): a chat is short (tens of tokens), so padding
each batch to its longest row wastes little, and every row stays one conversation that cannot see
another through attention. Packing would need a block-diagonal attention mask to keep packed
conversations apart; with padding the plain causal mask is enough.

Too-long conversations are cut to the context length when something learnable remains in the
first block_size + 1 tokens, and skipped otherwise; both counts are reported, never hidden.
"""

from dataclasses import dataclass

import torch

from nanollm.chat import render_conversation
from nanollm.losses import IGNORE_INDEX


@dataclass
class SFTReport:
    kept: int = 0
    truncated: int = 0  # cut to the context length, still with learned tokens
    skipped: int = 0  # nothing learnable within the context length

    def __str__(self):
        return (f"{self.kept} conversations ({self.truncated} truncated to the context, "
                f"{self.skipped} skipped: no assistant token within the context)")


def sft_example(ids, mask):
    """(ids, mask) of a rendered conversation -> (inputs, targets), targets shifted by one.

    mask[i] says whether ids[i] is learned as a prediction target, so target i is ids[i + 1]
    when mask[i + 1] is 1 and IGNORE_INDEX otherwise.
    """
    inputs = ids[:-1]
    targets = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
    return inputs, targets


def sft_examples(tokenizer, conversations, block_size):
    """Render every conversation; returns (list of (inputs, targets), SFTReport)."""
    examples, report = [], SFTReport()
    for messages in conversations:
        ids, mask = render_conversation(tokenizer, messages)
        if len(ids) > block_size + 1:
            ids, mask = ids[:block_size + 1], mask[:block_size + 1]
            if not any(mask[1:]):
                report.skipped += 1
                continue
            report.truncated += 1
        examples.append(sft_example(ids, mask))
        report.kept += 1
    return examples, report


def sft_batch(examples, pad_id, device="cpu"):
    """Right-pad a list of (inputs, targets) to the longest: x (B, T) ids, y (B, T) targets.

    Padding sits after the real tokens, so causal attention never lets a real token see it;
    its targets are IGNORE_INDEX, so it adds nothing to the loss.
    """
    T = max(len(inputs) for inputs, _ in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for row, (inputs, targets) in enumerate(examples):
        x[row, :len(inputs)] = torch.tensor(inputs)
        y[row, :len(targets)] = torch.tensor(targets)
    return x.to(device), y.to(device)
