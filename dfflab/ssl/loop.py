"""The SSL training loop: store batches -> device -> two views -> method loss -> step.

Shared by ``pretrain`` and ``benchmarks/ssl_throughput.py`` so the benchmark times the
real loop. On a GPU the store is read by a background thread (pinned memory, two
batches ahead) while the device works, so reading never stalls the step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from dfflab.device import autocast, to_device_images


def ssl_step(method: nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, x1: torch.Tensor,
             step: int, total_steps: int, *, scheduler=None, amp: bool = True) -> torch.Tensor:
    """One optimisation step on two views; returns the loss (a device tensor, not synced)."""
    with autocast(x0.device, amp):
        loss = method.loss(x0, x1, step, total_steps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def ssl_epoch(method: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, view,
              device: torch.device, *, step: int, total_steps: int, scheduler=None,
              gen: torch.Generator | None = None, amp: bool = True, desc: str | None = None,
              total: int | None = None) -> dict[str, float]:
    """One pass over ``batches`` of uint8 ``(x, y, source_id)`` (labels unused).

    Args:
        view: the view function (``dfflab.ssl.views``), applied twice per batch.
        step: optimiser steps done before this epoch (drives BYOL's momentum).

    Returns:
        ``ssl_loss`` (mean over images), ``images``, ``seconds``, ``img_per_s``, ``steps``.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    method.train()
    losses, n, t0 = [], 0, time.time()
    bar = tqdm(batches, desc=desc, total=total, leave=False, disable=desc is None, dynamic_ncols=True)
    for x, _, _ in bar:
        x = to_device_images(x, device)
        loss = ssl_step(method, optimizer, view(x, gen), view(x, gen), step, total_steps,
                        scheduler=scheduler, amp=amp)
        losses.append(loss * len(x))
        n, step = n + len(x), step + 1
        if desc is not None and step % 10 == 0:  # a sync only when a bar is shown
            bar.set_postfix(loss=f"{float(loss):.4f}")
    mean = float(torch.stack(losses).sum()) / max(1, n) if losses else float("nan")
    if not torch.isfinite(torch.tensor(mean)):
        raise FloatingPointError(f"SSL loss became {mean} in an epoch of {n} images")
    secs = time.time() - t0
    return {"ssl_loss": mean, "images": n, "seconds": secs, "img_per_s": n / max(secs, 1e-9),
            "steps": step}


def prefetch(batches: Iterable, device: torch.device, depth: int = 2) -> Iterator:
    """Iterate ``batches`` from a background thread, pinned for fast copies on a GPU.

    On a CPU there is nothing to overlap with, so batches pass through unchanged.
    """
    if device.type != "cuda":
        yield from batches
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work():
        try:
            for b in batches:
                q.put(tuple(t.pin_memory() for t in b))
        except BaseException as e:  # re-raised in the consumer
            q.put(e)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
