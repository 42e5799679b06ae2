"""Stages on disk: a trained model, its tokenizer and its config, saved and loaded by name.

    save_stage("out", "sft", model, tokenizer, cfg, step, metrics=...)
    model, tokenizer, state = load_stage("out", "sft", device)

A stage checkpoint is a plain dict, loadable with torch.load(weights_only=True):
    {"stage", "model", "model_config", "tokenizer", "train_config", "step",
     "optimizer" (for resuming), "rng", "data_rng", "metrics", ...}
"""

import dataclasses

from nanollm.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from nanollm.errors import CheckpointError
from nanollm.model import GPT, GPTConfig
from nanollm.tokenizer import Tokenizer


def unwrap(model):
    """The plain module inside a DDP wrapper and/or a torch.compile wrapper."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def trunk_from_state(state, **config_overrides):
    """A GPT of the config a stage checkpoint saved, its weights not loaded yet: the GPT itself,
    or the trunk of a module that wraps one (a reward model loads its whole state dict after)."""
    return GPT(GPTConfig(**{**state["model_config"], **config_overrides}))


def model_from_state(state, **config_overrides):
    """Rebuild the GPT saved in a stage checkpoint; every tensor must fit."""
    model = trunk_from_state(state, **config_overrides)
    model.load_state_dict(state["model"])
    return model


STAGE_KEYS = ("stage", "model", "model_config", "tokenizer", "step")


def load_stage_state(out_dir, name, map_location="cpu"):
    """The checkpoint dict saved as `name` ("sft", "sft.unfinished"), checked to be that stage's
    (nanollm/checkpoint.py) and to hold what a stage checkpoint holds."""
    state = load_checkpoint(out_dir, name, map_location)
    missing = [key for key in STAGE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{checkpoint_path(out_dir, name)} is not a stage checkpoint "
                              f"(it has no {', '.join(missing)})")
    return state


def load_stage(out_dir, stage, device="cpu", **config_overrides):
    """(model, tokenizer, state) of a saved stage, the model on `device` in eval mode."""
    state = load_stage_state(out_dir, stage)
    model = model_from_state(state, **config_overrides).to(device).eval()
    return model, Tokenizer.from_dict(state["tokenizer"]), state


def save_stage(out_dir, stage, model, tokenizer, cfg, step, optimizer=None, unfinished=False,
               **extra):
    """Write a stage checkpoint atomically (see nanollm/checkpoint.py) to {stage}.pt, or to
    {stage}.unfinished.pt for a run that has not finished (nanollm/runs.py). `model` is a GPT or
    a module wrapping one that exposes its trunk's `config`; `extra` holds plain values, such as
    the options a wrapper needs to be rebuilt."""
    model = unwrap(model)
    state = dict(stage=stage, model=model.state_dict(),
                 model_config=dataclasses.asdict(model.config), tokenizer=tokenizer.to_dict(),
                 train_config=dataclasses.asdict(cfg), step=step, **extra)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return save_checkpoint(out_dir, f"{stage}.unfinished" if unfinished else stage, state)
