"""The garbage collector's settings for the long-running processes (workers, the carriers
simulator): a large heap that lives as long as the process (the route table, the decks)
and many objects per message that live for a fraction of a second.

``settle()``, once that heap is built: collect, then freeze what is left (no collection
walks it again), and collect the youngest generation after ``GEN0_THRESHOLD`` net
allocations instead of CPython's 700. Why (``benchmarks/pipeline.py``, 2026-12-02): at
700, a collection ran every few dozen messages, so every message in flight (a few
hundred milliseconds) was promoted to the oldest generation, and the full collections
that promotion brings (tens of ms each, over every young object) cost a worker 11-46 µs
of CPU per message, up to half of its pipeline's own time. At 10,000 the messages are
answered and freed (by reference count: the pipeline makes no cycles) before a
collection sees them: 2 µs per message. The count is net (allocations less
deallocations), so memory between collections grows by at most that many objects.
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 10_000


def settle() -> None:
    """Freeze the heap built so far and make young collections rare (see the module)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
