"""Checkpoints by stage name: `{out_dir}/{stage}.pt`, written atomically, loaded safely.

Each training script saves one stage and the next script loads it:

    train_pretrain.py -> pretrain.pt
    train_sft.py      (loads pretrain.pt)         -> sft.pt
    train_reward.py   (loads sft.pt)              -> reward.pt
    train_rlhf.py     (loads sft.pt, reward.pt)   -> rlhf.pt
    train_dpo.py      (loads sft.pt)              -> dpo.pt

A checkpoint is a plain dict, e.g. {"model": state_dict, "optimizer": state_dict, "config": dict,
"tokenizer": str/dict, "step": int, "rng": rng_state()}. It may hold only tensors and plain Python
values (dict, list, tuple, str, int, float, bool, None) because we load with
`torch.load(weights_only=True)`, which refuses to run arbitrary pickled code: a checkpoint file
downloaded from somewhere cannot take over your machine. Store a dataclass config as
dataclasses.asdict(config), never the object itself.

Why atomic: a run killed while writing (out of time, out of disk, Ctrl-C) must not destroy the last
good checkpoint. We write `{stage}.pt.tmp`, flush it to disk, then os.replace() it over the old
file; the rename is atomic, so the file on disk is always either the old checkpoint or the new one.

What a run may replace, where an unfinished run saves and how it resumes is nanollm/runs.py.

Simplification: one file per stage (and one for its unfinished run); production systems keep
several and shard them across ranks.
"""

import os
import random

import numpy as np
import torch

from nanollm.errors import CheckpointError, MissingCheckpoint

# Which script produces each stage, so a missing checkpoint can say what to run.
STAGE_SCRIPTS = {
    "pretrain": "train_pretrain.py",
    "sft": "train_sft.py",
    "reward": "train_reward.py",
    "rlhf": "train_rlhf.py",
    "dpo": "train_dpo.py",
}


def checkpoint_path(out_dir, stage):
    """Where the checkpoint of `stage` lives: {out_dir}/{stage}.pt."""
    return os.path.join(out_dir, f"{stage}.pt")


def _fsync_dir(path):
    """Flush a directory entry (the rename) to disk; POSIX only, a no-op elsewhere."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(out_dir, stage, state):
    """Write `state` to {out_dir}/{stage}.pt atomically; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = checkpoint_path(out_dir, stage)
    tmp_path = f"{path}.tmp"
    try:
        with open(tmp_path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the rename makes them visible
        os.replace(tmp_path, path)
    except BaseException:
        # Whatever went wrong (an error, Ctrl-C), the previous checkpoint is untouched;
        # remove the partial file so it cannot be mistaken for a good one.
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(out_dir)
    return path


def stage_of(name):
    """The stage a checkpoint name holds: "sft" for "sft", "sft.unfinished" and
    "out/lessons/sft" (a name may be a path, as --init_from allows)."""
    return os.path.basename(name).split(".")[0]


def _missing(out_dir, name, path):
    """The one-line message for a checkpoint that is not there, with the command that makes it."""
    stage = stage_of(name)
    unfinished = checkpoint_path(out_dir, f"{stage}.unfinished")
    script = STAGE_SCRIPTS.get(stage)
    if name == stage and os.path.exists(unfinished):
        hint = (f"{unfinished} holds a run that has not finished: continue it with "
                f"python {script} --out_dir {out_dir} --resume")
    elif script:
        hint = f"run {script} first (with the same --out_dir) to produce it"
    else:
        hint = f"no script is known to produce it; known stages: {sorted(STAGE_SCRIPTS)}"
    return f"no checkpoint for stage '{stage}' at {path}: {hint}"


def load_checkpoint(out_dir, name, map_location="cpu"):
    """Load the dict saved as `name` ("sft", "sft.unfinished"), with weights_only=True (tensors
    and plain values only), and check it: a file that cannot be read, or that holds another
    stage than its name says, stops with a one-line CheckpointError naming the file."""
    path = checkpoint_path(out_dir, name)
    if not os.path.exists(path):
        raise MissingCheckpoint(_missing(out_dir, name, path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupt, or not a torch file at all
        raise CheckpointError(f"{path} cannot be read: the file is truncated or corrupt "
                              f"({type(err).__name__}); train the stage again or restore the "
                              "file") from None
    stage = stage_of(name)
    held = state.get("stage") if isinstance(state, dict) else None
    if held is not None and held != stage:
        raise CheckpointError(f"{path} holds a '{held}' checkpoint (made by "
                              f"{STAGE_SCRIPTS.get(held, 'another script')}), not the '{stage}' "
                              f"checkpoint this run needs; put the {stage} checkpoint there or "
                              "choose another --out_dir")
    return state


# ----------------------------------------------------------------------------------------------
# Random number generator states, in a form weights_only loading accepts


def rng_state():
    """The Python, NumPy and torch RNG states as plain lists and tensors (see set_rng_state).

    random.getstate() and np.random.get_state() hold tuples and numpy arrays, which weights_only
    loading rejects, so they are converted to lists of ints.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, np_key.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the states captured by rng_state()."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_key, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.array(np_key, dtype=np.uint32), np_pos, np_has_gauss,
                         np_gauss))
    # set_rng_state wants CPU byte tensors, whatever map_location the checkpoint was loaded with.
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        # A run resumed on fewer GPUs restores the ones it has.
        n = min(len(cuda_states), torch.cuda.device_count())
        for device_index in range(n):
            torch.cuda.set_rng_state(cuda_states[device_index].cpu(), device_index)
