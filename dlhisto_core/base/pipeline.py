"""Stages of a computation that overlap: a generator run in a worker thread, its items handed
over through a bounded queue.

Whole-slide prediction chains them (``dl_predict``): windows are read, decoded and normalised
in one thread, the network runs in another, and the caller blends, takes the argmax and writes.
Decoders, NumPy and PyTorch release the GIL in their heavy parts, so the stages run at once on
several cores, and on a GPU node the network never waits for the disk. The queues hold a few
items each, so memory does not grow with the slide.

Where PyTorch's threads already take every core the job has, more threads only interrupt them
(OpenMP's threads wait for each other at every layer): on 2 cores, predicting a 4.2 Mpx slide
in bfloat16 took 2.51 s with the stages in threads and 2.39 s without. :func:`spare_cores`
says whether there is room for them.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


def spare_cores(device_type: str, torch_threads: int) -> bool:
    """Whether stages in threads would run beside the network rather than interrupt it: on a
    GPU, or when PyTorch's threads leave some of this process's cores free."""
    return device_type == "cuda" or torch_threads < len(os.sched_getaffinity(0))


def in_thread(items: Iterable[T], depth: int = 2, name: str = "dlhisto-stage") -> Iterator[T]:
    """Yield the items of ``items``, computed ahead in a worker thread, at most ``depth`` waiting.

    An exception in the worker is raised here, in the consumer, when it reaches that item. If
    the consumer stops early (an error of its own, ``close()``), the worker stops at its next
    item and the thread ends before this generator returns.
    """
    handover: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, error = handover.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
