"""The trainer's peak memory over a step's passes: the process's peak RSS on CPU (VmHWM, reset through
/proc/self/clear_refs), the allocator's peak on CUDA."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

GIB = 1 << 30


class PeakMemory:
    """A context around each pass of a step: the first one after a read resets the peak, each one's end records
    it, `take_peak_gib` reads the step's peak and starts the next step."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self.fresh = device, 0, True

    def __enter__(self) -> PeakMemory:
        if self.fresh:
            self._reset()
            self.fresh = False
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, self._read())

    def take_peak_gib(self) -> float:
        peak, self.peak, self.fresh = self.peak, 0, True
        return peak / GIB

    def _reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # "5" resets the peak resident set size (Linux, proc(5))
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # then VmHWM is the process's lifetime peak

    def _read(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident set size since its last reset (VmHWM), in bytes."""
    return _status("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss_bytes() -> int:
    """This process's resident set size now (VmRSS), in bytes; 0 where /proc is missing."""
    return _status("VmRSS:")


def _status(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
