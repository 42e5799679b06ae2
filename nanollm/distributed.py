"""Data-parallel training across processes with PyTorch DDP, launched by torchrun.

    torchrun --standalone --nproc_per_node=4 train_pretrain.py --device cuda

torchrun starts one process per GPU and tells each who it is through environment variables (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Every process holds a full copy of the model,
trains on its own batches, and DistributedDataParallel averages the gradients across processes
during backward, so all copies take the same optimizer step.

Run without torchrun, init_distributed() returns a single-process DistInfo and nothing else changes:
the same script serves a laptop and a multi-GPU machine.

Simplifications: no model sharding (FSDP), no multi-node setup beyond what torchrun provides.
"""

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Who this process is in the group. enabled=False means a plain single-process run."""

    rank: int = 0  # index of this process among all processes
    local_rank: int = 0  # index among the processes of this machine = the GPU it uses
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self):
        """Only the main process logs, evaluates and saves checkpoints."""
        return self.rank == 0


def init_distributed(backend=None):
    """Join the process group torchrun set up, or fall back to a single process.

    backend: None picks "nccl" (GPU to GPU) when CUDA is available, else "gloo" (CPU, which is how
    the tests exercise this path).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ["WORLD_SIZE"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # before init, so NCCL binds this process to its GPU
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, enabled=True)


def cleanup_distributed():
    """Leave the process group (a no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value):
    """The mean of a tensor over all processes (e.g. a loss for logging); unchanged when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def any_process(flag: bool) -> bool:
    """True when `flag` is True on any process (a Ctrl-C that reached only some of them), so
    that all of them stop after the same step; the flag itself when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor(float(flag), device=device)  # nccl reduces GPU tensors only
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
