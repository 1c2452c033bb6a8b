"""``heap.settle``: what exists is frozen, young collections become rare."""

from __future__ import annotations

import gc

from router.support import heap


def test_settle_freezes_the_heap_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        long_lived = [[i] for i in range(1000)]
        heap.settle()
        assert gc.get_freeze_count() >= len(long_lived)
        assert gc.get_threshold() == (heap.GEN0_THRESHOLD, *before[1:])
        assert not any(o is long_lived for o in gc.get_objects())  # out of every generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
