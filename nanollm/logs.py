"""JSONL logs: one JSON object per line, easy to append to, plot and read back.

    log = JsonlLogger("out/sft_log.jsonl")
    log.log(step=step, loss=loss.item(), lr=lr)      # one JSON line per call
    records = read_jsonl("out/sft_log.jsonl")     # every run's records and header lines
    records = read_run("out/sft_log.jsonl")       # the newest run's records
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

    A log is never emptied: a new run appends to it after a header line (nanollm/runs.py), so
    the records of the runs before it, which may describe a checkpoint still on disk, are kept.
    enabled=False makes every call a no-op, for the non-main processes of a distributed run. Each
    line is written and flushed at once, so a crashed run keeps its log up to the crash.
    """

    def __init__(self, path, enabled=True):
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

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


def read_run(path):
    """The records of the newest run in a JSONL log, without header lines. A run resumed at step
    k continues the one before it, whose records from step k on give way to the resumed run's
    (an evaluation logged at step k just before the save is kept)."""
    return newest_run(read_jsonl(path))


def _step(record):
    """The step (or PPO iteration) a record was logged at."""
    return record.get("step", record.get("iteration", -1))


def newest_run(records):
    """newest_run(all records of a log) -> the records of its newest run (see read_run).

    A log holds segments, each after a header {"run": id, "resumed_at": step or None}; the
    newest run is every segment of the last header's run id. A segment resumed at step k
    replaces what the segments before it logged from step k on, except the evaluation of step k
    logged just before the save, which the resumed segment does not log again."""
    segments = []  # [(header, records)]; a log written before headers existed is one run
    for record in records:
        if "run" in record:
            segments.append((record, []))
        elif segments:
            segments[-1][1].append(record)
        else:
            segments.append(({}, [record]))
    newest_id = segments[-1][0].get("run") if segments else None
    newest = []
    for header, run_records in segments:
        if header.get("run") != newest_id:
            continue
        k = header.get("resumed_at")
        if k is None:  # a fresh start of this run
            newest = []
        else:
            again = {(_step(r), frozenset(r)) for r in run_records}  # logged again after k
            newest = [r for r in newest
                      if _step(r) < k or (_step(r) == k and (k, frozenset(r)) not in again)]
        newest += run_records
    return newest
