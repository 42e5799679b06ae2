"""What every training script shares: stages on disk, the optimizer step, smoke mode, loss checks.

Each script (train_pretrain.py, train_sft.py, train_rlhf.py, train_dpo.py) keeps its own story,
config and loop; the lines that would otherwise be copied between them live here.

A stage checkpoint is a plain dict, loadable with torch.load(weights_only=True):
    {"stage", "model", "model_config", "tokenizer", "train_config", "step",
     "optimizer" (for resuming), "rng", "data_rng", "metrics", ...}
"""

import dataclasses
import math

import torch

from nanollm.checkpoint import load_checkpoint, save_checkpoint
from nanollm.model import GPT, GPTConfig
from nanollm.tokenizer import Tokenizer


def apply_smoke(cfg, overrides):
    """Smoke mode: a run of seconds. Only fields still at their defaults are overridden, so
    `--smoke --max_steps 50` keeps the 50."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    changes = {k: v for k, v in overrides.items() if getattr(cfg, k) == defaults[k]}
    return dataclasses.replace(cfg, **changes)


def unwrap(model):
    """The plain GPT inside a DDP wrapper and/or a torch.compile wrapper."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def model_from_state(state, **config_overrides):
    """Rebuild the GPT saved in a stage checkpoint."""
    config = GPTConfig(**{**state["model_config"], **config_overrides})
    model = GPT(config)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    # a scalar head may be added to (or left off) a language model; anything else must match
    if [k for k in missing if not k.startswith("scalar_head")] or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model


def load_stage(out_dir, stage, device="cpu", **config_overrides):
    """(model, tokenizer, state) of a saved stage, the model on `device` in eval mode."""
    state = load_checkpoint(out_dir, stage)
    model = model_from_state(state, **config_overrides).to(device).eval()
    return model, Tokenizer.from_dict(state["tokenizer"]), state


def save_stage(out_dir, stage, model, tokenizer, cfg, step, optimizer=None, **extra):
    """Write a stage checkpoint atomically (see nanollm/checkpoint.py)."""
    model = unwrap(model)
    state = dict(stage=stage, model=model.state_dict(),
                 model_config=dataclasses.asdict(model.config), tokenizer=tokenizer.to_dict(),
                 train_config=dataclasses.asdict(cfg), step=step, **extra)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return save_checkpoint(out_dir, stage, state)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:  # a group may learn faster (GPT.configure_optimizer)
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


class NonFiniteLoss(RuntimeError):
    pass


def check_finite(loss, step, checkpoint_hint):
    """Stop a run whose loss became NaN or inf, before it overwrites a good checkpoint."""
    value = loss.item() if torch.is_tensor(loss) else loss
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"step {step}: the loss is {value}. Stopping; the last good checkpoint "
            f"({checkpoint_hint}) is left as it was. Usual causes: too high a learning rate "
            f"(try a smaller --lr or a longer --warmup_steps), or float16 without loss scaling.")
    return value
