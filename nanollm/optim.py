"""The optimisation step every training script takes: which parameters decay, the learning-rate
schedule, gradient clipping, and a stop on a loss that is no longer finite.

    optimizer = torch.optim.AdamW(weight_decay_groups(model.parameters(), 0.1), lr=cfg.lr)
    set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr))
    loss_value = check_finite(loss, step, checkpoint_hint)
    grad_norm = optimizer_step(model, optimizer, runtime.scaler, cfg.grad_clip)
"""

import math

import torch

from nanollm.errors import UserError


def weight_decay_groups(params, weight_decay):
    """AdamW parameter groups: matrices and embeddings decay, biases and LayerNorm gains do not.

    Decaying a bias or a LayerNorm gain towards zero only fights the normalisation; it does not
    regularise. Parameters that do not require gradients (a frozen part) are left out.
    """
    params = [p for p in params if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr):
    """Learning rate at `step` (0-based): linear warmup, cosine decay, then constant min_lr.

        warmup   (step < W):      lr = max_lr * (step + 1) / W
        decay    (W <= step < S): lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2,
                                  p = (step - W) / (S - W)
        after    (step >= S):     lr = min_lr

    with W = warmup_steps and S = total_steps. Warmup keeps the first updates small while Adam's
    moment estimates are still noise; the (step + 1) makes the very first update non-zero.
    Cosine decay lowers the LR smoothly so the end of training settles into a minimum.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    # a group may have a rate of its own on the same schedule (RewardModel.configure_optimizer)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_step(model, optimizer, scaler, grad_clip):
    """Unscale (float16 only), clip the global gradient norm, step, zero. Returns the norm.

    Clipping keeps one unlucky batch from throwing the weights far away; the norm before
    clipping is worth logging, as spikes in it announce a diverging run.
    """
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else
                                          float("inf"))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm.item()


class NonFiniteLoss(UserError, RuntimeError):
    """The loss became NaN or inf: most often a flag (the learning rate) the user can change."""


def check_finite(loss, step, saved):
    """Stop a run whose loss became NaN or inf, before it saves anything; `saved` names where
    its last progress is (a run's unfinished checkpoint), left as it was."""
    value = loss.item() if torch.is_tensor(loss) else loss
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"step {step}: the loss is {value}. Stopping without saving; {saved} (if the run "
            "saved any progress) and any finished checkpoint are left as they were. Usual "
            "causes: too high a learning rate (try a smaller --lr or a longer --warmup_steps), "
            "or float16 without loss scaling.")
    return value
