"""Small language models trained in a few seconds, in-process, for experiments in the lessons.

The training scripts save checkpoints, log and plot; an experiment that trains six models in a
minute wants none of that, only the same loop: AdamW, warmup then cosine decay, gradients clipped
(distill.train_student without a teacher). Texts become one token stream, each followed by the
separator token, as pretraining packs documents.

    data = token_stream(tokenizer, documents)                      # (N,) token ids
    model, losses = train_small(config, data, steps=800, batch_size=8)
    loss = held_out_loss(model, token_stream(tokenizer, other_documents))
    sft_small(model, tokenizer, chats, steps=150, replay=data, replay_share=0.25)
    dpo_small(model, tokenizer, pairs, steps=100)                  # against a frozen copy
"""

import copy
import math

import torch

from nanollm.data import get_batch, iterate_batches
from nanollm.dpo import dpo_loss, response_logprob
from nanollm.distill import train_student
from nanollm.losses import perplexity
from nanollm.model import GPT
from nanollm.optim import lr_at, optimizer_step, set_lr
from nanollm.pairs import render_pairs, score_pairs
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.sft import sft_batch, sft_examples


def token_stream(tokenizer, texts):
    """Every text's ids followed by the separator, end to end: (N,) int64."""
    ids = []
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eot]
    return torch.tensor(ids, dtype=torch.long)


def train_small(config, data, steps, batch_size, lr=3e-3, seed=0, warmup_share=0.1, model=None):
    """A new GPT(config) trained on random windows of `data` (N,) for `steps` steps of
    batch_size windows of config.block_size tokens; or `model`, trained further in place (a new
    optimizer and schedule, as a second stage of training starts). The same seed gives the same
    initial weights and the same windows, so two runs differ only in what the caller changed.
    Returns (model in eval mode, the loss of every step)."""
    seed_everything(seed)
    model = GPT(config) if model is None else model
    windows = torch.Generator().manual_seed(seed)
    losses = train_student(
        model, lambda: get_batch(data, batch_size, config.block_size, windows),
        setup_runtime("cpu", "float32"), steps, lr, warmup_steps=round(warmup_share * steps))
    return model.eval(), losses


def held_out_loss(model, data, batch_size=32, max_batches=8):
    """Mean cross-entropy in nats per token over the first windows of `data` (N,)."""
    block_size = model.config.block_size
    return math.log(perplexity(model, iterate_batches(data, batch_size, block_size,
                                                      max_batches=max_batches)))


def sft_small(model, tokenizer, chats, steps, batch_size=16, lr=3e-4, replay=None,
              replay_share=0.0, seed=0):
    """Fine-tune `model` in place on chats (lists of messages): each step a batch of batch_size
    random chats, learned on the assistant's tokens only (sft.sft_examples). With `replay`, (N,)
    ids of pretraining text, a step is instead, with probability replay_share, a batch of
    batch_size // 2 windows of that text: replay, the usual remedy for forgetting. Returns the
    loss of every step."""
    examples, _ = sft_examples(tokenizer, chats, model.config.block_size)
    rng = torch.Generator().manual_seed(seed)

    def chat_batch():
        rows = torch.randint(len(examples), (batch_size,), generator=rng).tolist()
        return sft_batch([examples[i] for i in rows], tokenizer.pad)  # (B, T) each

    def text_batch():
        return get_batch(replay, batch_size // 2, model.config.block_size, rng)  # (B / 2, T)

    next_batch = chat_batch if replay is None else mixed_batches(chat_batch, text_batch,
                                                                 replay_share, rng)
    seed_everything(seed)
    losses = train_student(model, next_batch, setup_runtime("cpu", "float32"), steps, lr,
                           warmup_steps=steps // 10)
    model.eval()
    return losses


def mixed_batches(first, second, share, generator):
    """A next_batch that calls second() with probability `share` and first() otherwise."""
    def next_batch():
        return second() if torch.rand(1, generator=generator).item() < share else first()
    return next_batch


def dpo_small(policy, tokenizer, pairs, steps, batch_size=16, beta=0.1, lr=2e-5, seed=0):
    """DPO of `policy` in place on preference pairs ({"prompt", "chosen", "rejected"}), against
    a frozen copy of it as the reference: each step batch_size random pairs and the mean of
    dpo.dpo_loss; AdamW without weight decay, warmup then cosine decay. beta and lr default to
    train_dpo.py's (the paper's beta; a learning rate for a small model). Returns the loss of
    every step."""
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    rendered, _ = render_pairs(tokenizer, pairs, policy.config.block_size)
    runtime = setup_runtime("cpu", "float32")
    seed_everything(seed)
    rows = torch.Generator().manual_seed(seed)
    optimizer = policy.configure_optimizer(0.0, lr, fused=runtime.fused_adamw)
    policy.train()
    losses = []
    for step in range(steps):
        set_lr(optimizer, lr_at(step, lr, steps // 10, steps, lr / 10))
        batch = [rendered[i] for i in torch.randint(len(rendered), (batch_size,),
                                                    generator=rows).tolist()]
        policy_logps = score_pairs(lambda *b: response_logprob(policy, *b), batch, tokenizer.pad)
        with torch.no_grad():
            ref_logps = score_pairs(lambda *b: response_logprob(reference, *b), batch,
                                    tokenizer.pad)
        loss = dpo_loss(*policy_logps, *ref_logps, beta)[0].mean()
        loss.backward()
        losses.append(loss.item())
        optimizer_step(policy, optimizer, runtime.scaler, 1.0)
    policy.eval()
    return losses
