"""The large-review scheduler: reviews too large (or pods with too many containers) to decide on the event loop.

They are decoded and decided in a few worker threads (:class:`LargeReviewWorkers`), huge
ones paced by a byte budget (:class:`ByteBudget`), so that ordinary admissions are never
kept waiting behind them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: reviews at least this large are huge: decoding one holds the interpreter (GIL) in one piece
#: for about 12 ms per MB, which no thread switch can interrupt
HUGE_BODY_BYTES = 1024 * 1024
#: huge reviews are decoded at this many bytes per second at most (so at most ~1.5% of the
#: time is spent in such pieces); pods that large are rare, and etcd stores none over 1.5 MiB
HUGE_BODY_RATE = 1024 * 1024


#: a pod with more containers than this is decided in a worker thread even when its review is
#: small: the decision's cost grows with the containers (a 512 KiB review can hold 15,000)
MANY_CONTAINERS = 64
#: the interpreter's thread switch interval while a worker thread decides (normally 5 ms): the
#: event loop, waiting for the interpreter lock at each turn, gets it back within a millisecond
BUSY_SWITCH_INTERVAL = 0.001


def many_containers(pod: Any) -> bool:
    spec = pod.get("spec") if isinstance(pod, dict) else None
    if not isinstance(spec, dict):
        return False
    return sum(len(v) for k in ("containers", "initContainers") if isinstance(v := spec.get(k), list)) > MANY_CONTAINERS


class LargeReviewWorkers:
    """The threads that decode and decide large reviews, at most ``size`` at a time.

    While one of them runs, the interpreter hands the lock over every millisecond instead of
    every 5, so the event loop is never kept waiting long (measured under `make attack`: the
    longest event-loop lag 123 -> 51 ms); with no worker busy the interval is the normal one,
    so ordinary admissions pay nothing for it.
    """

    def __init__(self, size: int):
        self.slots = asyncio.Semaphore(size)
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="large-review")
        self._busy = 0
        self._interval = sys.getswitchinterval()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._busy == 0:
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(BUSY_SWITCH_INTERVAL)
        self._busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._busy -= 1
            if self._busy == 0:
                sys.setswitchinterval(self._interval)


class ByteBudget:
    """A token bucket of bytes (one consumer at a time: used under the large-review slot)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = time.monotonic()

    async def spend(self, amount: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)
