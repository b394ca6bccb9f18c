"""Data parallelism across processes on one machine: each process (a "worker") trains on its own
batch with one torch thread, and the workers sum their gradients before every optimizer step, so
that N workers take the step one process would take on the union of their N batches.

Why processes and not threads: the translator's training is a long chain of small operations (a
decoder step over a batch of 50-250 sentences), which intra-op threads barely speed up, while N
processes each run a full core. The sum goes through torch.distributed's gloo backend over
127.0.0.1 (no GPU needed; NCCL would be the choice for GPUs).

    group = Group.start(rank, world)        # in each worker (spawn() does this)
    n_all = group.sum_scalars(n_tokens)     # the step's target tokens over all workers
    loss = loss_sum / n_all[0]; loss.backward()
    group.sum_grads(model.parameters())     # every worker now holds the same gradient

With one worker every call is a no-op, so the single-process path is the same code.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class Group:
    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    @property
    def lead(self) -> bool:
        """The worker that validates, checkpoints, prints and plots."""
        return self.rank == 0

    @classmethod
    def start(cls, rank: int, world: int, port: int) -> Group:
        if world > 1:
            dist.init_process_group(
                "gloo",
                init_method=f"tcp://127.0.0.1:{port}",
                rank=rank,
                world_size=world,
                # a worker waits for the others at the end of each epoch, while the lead checkpoints
                timeout=datetime.timedelta(hours=2),
            )
        return cls(rank, world)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum_scalars(self, *values: float) -> list[float]:
        """Each value summed over the workers (float64, so token counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def broadcast_ints(self, *values: int) -> list[int]:
        """The lead's values, on every worker."""
        t = torch.tensor(values, dtype=torch.long)
        if self.world > 1:
            dist.broadcast(t, 0)
        return [int(x) for x in t]

    def gather(self, obj: object) -> list:
        """Every worker's `obj` (picklable), in rank order, on every worker."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients over the workers, in one flat all-reduce. A worker without a batch
        this step (the epoch's last step when the batches do not divide evenly) contributes
        zeros."""
        if self.world == 1:
            return
        params = [p for p in params if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        at = 0
        for p in params:
            n = p.numel()
            p.grad = flat[at : at + n].view_as(p).clone()
            at += n

    def broadcast_params(self, module: torch.nn.Module) -> None:
        """The lead's parameters on every worker (they start from the same seed; this makes sure)."""
        if self.world > 1:
            for t in module.state_dict().values():
                dist.broadcast(t, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, fn: Callable, world: int, port: int, threads: int, args: tuple) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    group = Group.start(rank, world, port)
    try:
        fn(group, *args)
    finally:
        group.close()


def spawn(fn: Callable, world: int, *args, threads: int = 1) -> None:
    """Run fn(group, *args) in `world` worker processes (or in this one when world is 1), each with
    `threads` torch threads. An exception in any worker is raised here."""
    if world <= 1:
        fn(Group(), *args)
        return
    mp.spawn(_run, args=(fn, world, free_port(), threads, args), nprocs=world, join=True)
