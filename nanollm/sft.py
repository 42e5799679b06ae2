"""SFT data: conversations -> token ids with assistant-only targets -> padded batches.

    examples, report = sft_examples(tokenizer, conversations, block_size)
    x, y = sft_batch([examples[i] for i in rows], pad_id)   # (B, T) each; y is IGNORE_INDEX
                                                            # wherever nothing is learned
Why padding and not packing (as pretraining does): a chat is short (tens of tokens), so padding
each batch to its longest row wastes little, and every row stays one conversation that cannot see
another through attention. Packing would need a block-diagonal attention mask to keep packed
conversations apart; with padding the plain causal mask is enough.

Too-long conversations are cut to the context length when something learnable remains in the
first block_size + 1 tokens, and skipped otherwise; both counts are reported, never hidden, and
the report names the first skipped chats. A set with no example left would give a loss of 0 and
look perfect: require_examples stops it with an error that says why.

    require_examples(examples, report, what="held-out chats")   # DataError if none is left
"""

from dataclasses import dataclass, field

import torch

from nanollm.chat import render_conversation
from nanollm.errors import DataError
from nanollm.formats import name_places, remember
from nanollm.losses import IGNORE_INDEX


@dataclass
class SFTReport:
    kept: int = 0
    truncated: int = 0  # cut to the context length, still with learned tokens
    skipped: int = 0  # nothing learnable within the context length
    skipped_at: list[int] = field(default_factory=list)  # the first few: file lines or positions
    where: str = "chat"  # what skipped_at counts: "line" (of the file) or "chat" (1 = the first)
    block_size: int = 0

    def skipped_places(self):
        """'lines 3, 7, 12' or 'chats 2, 5': where the first skipped conversations are."""
        return name_places(self.where, self.skipped_at, self.skipped)

    def __str__(self):
        at = f" ({self.skipped_places()})" if self.skipped else ""
        return (f"{self.kept} conversations ({self.truncated} truncated to the context, "
                f"{self.skipped} skipped: no assistant token within the context{at})")


def sft_example(ids, mask):
    """(ids, mask) of a rendered conversation -> (inputs, targets), targets shifted by one.

    mask[i] says whether ids[i] is learned as a prediction target, so target i is ids[i + 1]
    when mask[i + 1] is 1 and IGNORE_INDEX otherwise.
    """
    inputs = ids[:-1]
    targets = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
    return inputs, targets


def sft_examples(tokenizer, conversations, block_size, lines=None):
    """Render every conversation; returns (list of (inputs, targets), SFTReport).

    lines: the file line of each conversation (formats.load_chats_with_lines), so the report
    names skipped chats by line; without it they are named by position, the first being 1."""
    examples = []
    report = SFTReport(where="chat" if lines is None else "line", block_size=block_size)
    places = range(1, len(conversations) + 1) if lines is None else lines
    for place, messages in zip(places, conversations, strict=True):
        ids, mask = render_conversation(tokenizer, messages)
        if len(ids) > block_size + 1:
            ids, mask = ids[:block_size + 1], mask[:block_size + 1]
            if not any(mask[1:]):
                report.skipped += 1
                remember(report.skipped_at, place)
                continue
            report.truncated += 1
        examples.append(sft_example(ids, mask))
        report.kept += 1
    return examples, report


def require_examples(examples, report, what="chats"):
    """Stop with a DataError when sft_examples left no example: an empty set trains on nothing
    and evaluates to a loss of 0. `what` names the set in the message, e.g. "held-out chats"."""
    if examples:
        return
    if not report.skipped:
        raise DataError(f"no {what}: the list is empty; give at least one conversation")
    raise DataError(f"no {what} left: all {report.skipped} were skipped, longer than the context "
                    f"of {report.block_size} tokens with no assistant token inside it "
                    f"({report.skipped_places()}); shorten them or answer earlier in them")


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
