"""Progress over the slices of a volume: a bar with the remaining time, and a warning for long volumes.

A thin-slice CT of 2,000 slices takes over an hour on a laptop CPU; above :data:`LONG_VOLUME_SLICES`
slices the first batch's rate gives an estimate of the whole volume, logged as a warning (shown with
``--no-progress`` and ``-q`` too), so a user can stop early and resample or use a GPU.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

__all__ = ["LONG_VOLUME_SLICES", "SliceProgress"]

logger = logging.getLogger(__name__)

#: Above this many slices a volume gets a warning with the estimated time.
LONG_VOLUME_SLICES = 1000
_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} slices [{elapsed} elapsed, {remaining} remaining, {rate_fmt}]"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


class SliceProgress:
    """Count slices done; show a bar (when enabled) and warn once about a long volume.

    Args:
        total: slices of the volume.
        enabled: show the bar.
        name: the volume, named in the warning.
    """

    def __init__(self, total: int, enabled: bool, name: str = "volume") -> None:
        self.total, self.name, self.done = int(total), name, 0
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=self.total, desc="slices", unit="slice", leave=False, disable=not enabled,
                        bar_format=_FORMAT)

    def update(self, n: int) -> None:
        """``n`` more slices done (the first call of a long volume logs the estimate)."""
        first = self.done == 0
        self.done += n
        self.bar.update(n)
        if first and self.total > LONG_VOLUME_SLICES:
            rate = (time.perf_counter() - self.t0) / max(self.done, 1)
            logger.warning("%s: %d slices (more than %d): about %s at the rate of the first %d slices "
                           "(%.2f s per slice); resample to thicker slices or use a GPU to go faster", self.name,
                           self.total, LONG_VOLUME_SLICES, _duration(rate * self.total), self.done, rate)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
