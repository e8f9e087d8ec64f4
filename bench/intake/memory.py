"""Resident memory of a process tree, sampled in a thread (psutil, every 100 ms)."""

from __future__ import annotations

import threading
import time

import psutil

__all__ = ["RssSampler", "summary", "tree_cpu_seconds", "tree_rss"]


def tree_rss(root: psutil.Process) -> int:
    """RSS of ``root`` and all its descendants (gunicorn's master and its worker)."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu_seconds(root: psutil.Process) -> float:
    """User plus system CPU time of ``root`` and its descendants, so far."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class RssSampler:
    """Samples ``(seconds since start, bytes)`` until stopped."""

    def __init__(self, pid: int, interval: float = 0.1):
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self.samples: list[tuple[float, int]] = []
        self._started = 0.0

    def start(self) -> RssSampler:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter() - self._started, tree_rss(self._root)))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval)


def summary(samples: list[tuple[float, int]]) -> dict:
    """Peak and the curve's start, middle and end (MiB), so "flat" can be judged."""
    if not samples:
        return {}

    def at(fraction: float) -> float:
        return samples[min(len(samples) - 1, int(fraction * len(samples)))][1] / 2**20

    return {
        "peak_mib": max(rss for _, rss in samples) / 2**20,
        "start_mib": samples[0][1] / 2**20,
        "quarter_mib": at(0.25),
        "middle_mib": at(0.5),
        "three_quarters_mib": at(0.75),
        "end_mib": samples[-1][1] / 2**20,
        "samples": len(samples),
        # Every second's sample, for plotting: [seconds, MiB].
        "curve": [[round(t, 2), round(rss / 2**20, 1)] for t, rss in samples[::10]],
    }
