"""One training run of a stage on disk: what it may replace, where its progress goes, how it
resumes exactly, and how Ctrl-C stops it between two steps.

A run never destroys a better result:

    {stage}.pt             a finished run. A new run refuses to start while it exists, unless
                           --overwrite; only a finished run writes it.
    {stage}.unfinished.pt  the progress of a run that has not finished: saved at evaluations, on
                           Ctrl-C and at --stop_at. --resume continues it; it is deleted when the
                           run finishes.
    {stage}_log.jsonl      every run's records, appended, each run after a header line
                           {"run": id, "resumed_at": step or null, ...}; read_run gives the newest.

A resumed run is the same run: it must use the same flags (the ones that cannot change the
result, such as --device, excepted) and the same data tokenizer, and it restores the model, the
optimizer, the data order and the random state saved after the last finished step, so it ends
exactly where an uninterrupted run would have.

    run = StageRun(cfg.out_dir, "sft", cfg.max_steps, cfg.overwrite, cfg.resume)
    state = run.resume_state(cfg, tokenizer, model)   # None unless --resume
    start_step = run.restore(state, model, optimizer, data_rng) if state else 0
    log = run.open_log(start_step)
    with StopRequest() as stop:
        for step in range(start_step, cfg.max_steps):
            ...                                       # train; save_progress at evaluations
            if stop.requested or step + 1 == cfg.stop_at:
                break
    if step + 1 < cfg.max_steps:
        run.stop(run.save_progress(...), step + 1, stop.requested)
    run.save_progress(...)                            # all steps kept; then the final evaluation
    run.save_finished(model, tokenizer, cfg, metrics=...)
"""

import dataclasses
import os
import signal
import threading
import time
import uuid

import torch

from nanollm.checkpoint import STAGE_SCRIPTS, checkpoint_path, rng_state, set_rng_state
from nanollm.errors import CheckpointError, ConfigError, MissingCheckpoint
from nanollm.logs import JsonlLogger
from nanollm.stages import load_stage_state, save_stage

# Flags a resumed run may change: where it runs and when it stops, never what it computes. The
# data may move (--data_dir): resume_state checks that its tokenizer is the run's.
RESUME_MAY_CHANGE = {"resume", "overwrite", "stop_at", "device", "compile", "smoke", "out_dir",
                     "data_dir"}


def _read_quickly(path):
    """A checkpoint's plain values without reading its tensors (memory-mapped), or None when
    the file cannot be read (truncated or corrupt)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return state if isinstance(state, dict) else None


def describe_checkpoint(path):
    """What a checkpoint in the way holds, for the message that refuses to replace it:
    "a finished 'sft' run (step 300)" or "an unfinished 'sft' run (step 120 of 300)"."""
    state = _read_quickly(path)
    if state is None:
        return "a file that cannot be read (truncated or corrupt)"
    if path.endswith(".unfinished.pt"):
        return (f"an unfinished '{state.get('stage')}' run (step {state.get('step')} of "
                f"{state.get('total_steps')})")
    return f"a finished '{state.get('stage')}' run (step {state.get('step')})"


def flag_differences(saved: dict, current: dict) -> list[str]:
    """["--lr 0.001 here, 0.0003 in the checkpoint", ...]: flags that would change the result."""
    return [f"--{name} {current[name]!r} here, {saved[name]!r} in the checkpoint"
            for name in current
            if name not in RESUME_MAY_CHANGE and name in saved and saved[name] != current[name]]


def stage_files(out_dir, stage):
    """The files of `stage` in out_dir that a new run would replace: finished and unfinished."""
    paths = (checkpoint_path(out_dir, stage), checkpoint_path(out_dir, f"{stage}.unfinished"))
    return [path for path in paths if os.path.exists(path)]


class StageRun:
    """The files of one run of `stage` in out_dir, checked before any work is done;
    total_steps: where the run finishes (its steps or iterations)."""

    def __init__(self, out_dir, stage, total_steps, overwrite=False, resume=False):
        self.out_dir, self.stage, self.total_steps = out_dir, stage, total_steps
        self.overwrite, self.resume = overwrite, resume
        self.finished_path = checkpoint_path(out_dir, stage)
        self.unfinished_path = checkpoint_path(out_dir, f"{stage}.unfinished")
        self.log_path = os.path.join(out_dir, f"{stage}_log.jsonl")
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        script = STAGE_SCRIPTS.get(stage, "the script")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ConfigError(f"--out_dir {out_dir} is a file, not a folder")
        if resume and not os.path.exists(self.unfinished_path):
            raise MissingCheckpoint(
                f"--resume: no unfinished '{stage}' run to continue ({self.unfinished_path} does "
                f"not exist); run {script} without --resume")
        if not resume and not overwrite:
            for path in stage_files(out_dir, stage):
                raise CheckpointError(
                    f"{path} already holds {describe_checkpoint(path)}: pass --overwrite to "
                    "replace it" + (", --resume to continue it" if "unfinished" in path
                                    else "") + ", or choose another --out_dir")

    def resume_state(self, cfg, tokenizer=None, model=None, map_location="cpu"):
        """The unfinished run's checkpoint (None without --resume), checked: same stage, same
        flags, the same tokenizer for the data, the same model shapes."""
        if not self.resume:
            return None
        state = load_stage_state(self.out_dir, f"{self.stage}.unfinished", map_location)
        where = self.unfinished_path
        differences = flag_differences(state.get("train_config", {}), dataclasses.asdict(cfg))
        if differences:
            raise CheckpointError(f"--resume: {where} was trained with other flags: "
                                  + "; ".join(differences) + ". Resume with the same flags")
        if tokenizer is not None and tokenizer.to_dict() != state["tokenizer"]:
            raise CheckpointError(f"--resume: the data's tokenizer is not the one {where} was "
                                  "trained with (data made with another --tokenizer, "
                                  "--vocab_size or --data_dir); resume with the run's own data")
        if model is not None:
            config = dataclasses.asdict(model.config)
            shapes = [f"{k} {config[k]} here, {state['model_config'][k]} in the checkpoint"
                      for k in config if k != "dropout" and config[k] != state["model_config"][k]]
            if shapes:
                raise CheckpointError(f"--resume: the model does not fit {where}: "
                                      + "; ".join(shapes))
        self.run_id = state.get("run", self.run_id)
        # a run started with --overwrite may still replace what it was allowed to replace
        self.overwrite = self.overwrite or state["train_config"].get("overwrite", False)
        return state

    def restore(self, state, model, optimizer, data_rng=None):
        """Put the unfinished run's model, optimizer, data order and random state back; the
        step to continue from."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if data_rng is not None:
            data_rng.set_state(state["data_rng"].cpu())
        set_rng_state(state["rng"])
        return state["step"]

    def open_log(self, start_step=0, enabled=True):
        """The run's JSONL log, appended to after a header line: earlier runs are kept."""
        log = JsonlLogger(self.log_path, enabled=enabled)
        log.log(run=self.run_id, resumed_at=start_step if self.resume else None,
                started=time.strftime("%Y-%m-%d %H:%M:%S"))
        return log

    def save_progress(self, model, tokenizer, cfg, step, optimizer, **extra):
        """Save the run so far to {stage}.unfinished.pt, with the random state, never touching
        {stage}.pt; `extra` holds what else a resumed run needs (the data order). Returns the
        path."""
        there = os.path.exists(self.unfinished_path)
        saved = (_read_quickly(self.unfinished_path) if there else None) or {}
        if saved.get("run", self.run_id) != self.run_id and not self.overwrite:
            raise CheckpointError(f"{self.unfinished_path} was written by another run while this "
                                  "one trained; not replaced (pass --overwrite to replace it)")
        return save_stage(self.out_dir, self.stage, model, tokenizer, cfg, step, optimizer,
                          unfinished=True, run=self.run_id, total_steps=self.total_steps,
                          rng=rng_state(), **extra)

    def save_finished(self, model, tokenizer, cfg, optimizer=None, **extra):
        """Save the finished run to {stage}.pt and delete its unfinished file. A {stage}.pt
        that another run wrote meanwhile is replaced only with --overwrite; this run's progress
        then stays in the unfinished file, which the message names."""
        if not self._may_replace():
            raise CheckpointError(f"{self.finished_path} was written by another run while this "
                                  f"one trained; not replaced. This run is in "
                                  f"{self.unfinished_path}: replace it with --resume --overwrite")
        path = save_stage(self.out_dir, self.stage, model, tokenizer, cfg, self.total_steps,
                          optimizer, run=self.run_id, **extra)
        if os.path.exists(self.unfinished_path):
            os.remove(self.unfinished_path)
        return path

    def _may_replace(self):
        """May this run write {stage}.pt: nothing there, --overwrite, or this very run's."""
        if self.overwrite or not os.path.exists(self.finished_path):
            return True
        saved = _read_quickly(self.finished_path)
        return saved is not None and saved.get("run") == self.run_id

    def stop(self, saved_path, steps_done, interrupted):
        """End a run that stopped early (Ctrl-C or --stop_at), its progress saved."""
        print(f"stopped after step {steps_done} of {self.total_steps}: saved {saved_path}; "
              "continue with --resume")
        raise SystemExit(130 if interrupted else 0)


class StopRequest:
    """Ctrl-C as a request: the loop finishes the step in flight and saves, so a resumed run
    continues from a clean state; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after the step in flight and saving "
              "(press Ctrl-C again to stop at once, without saving)", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
