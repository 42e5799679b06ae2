"""JSONL logs: one JSON object per line, easy to append to, plot and read back.

    log = JsonlLogger("out/sft_log.jsonl")
    log.log(step=step, loss=loss.item(), lr=lr)      # one JSON line per call
    records = read_jsonl("out/sft_log.jsonl")
"""

import json
import os

import numpy as np
import torch


def _json_value(value):
    """json.dumps fallback: one-element tensors and NumPy scalars become Python numbers."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to a JSON log")


class JsonlLogger:
    """Append one JSON line per .log() call to `path`.

    The file starts empty unless append=True (resuming a run). enabled=False makes every call a
    no-op, for the non-main processes of a distributed run. Each line is written and flushed at
    once, so a crashed run keeps its log up to the crash.
    """

    def __init__(self, path, enabled=True, append=False):
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not append:
                open(path, "w").close()

    def log(self, record=None, **fields):
        """log(step=3, loss=2.1) or log({"step": 3, "loss": 2.1})."""
        if not self.enabled:
            return
        line = json.dumps({**(record or {}), **fields}, default=_json_value)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()


def read_jsonl(path):
    """All records of a JSONL file, skipping blank lines."""
    records = []
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {line_number}: invalid JSON ({err.msg})") from None
    return records
