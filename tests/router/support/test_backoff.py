from __future__ import annotations

import pytest

from router.support.backoff import Backoff


def test_delays_double_up_to_the_cap_within_the_upper_half() -> None:
    top = Backoff(0.2, 1.0, rng=lambda: 1.0)
    assert [top.delay() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    bottom = Backoff(0.2, 1.0, rng=lambda: 0.0)
    assert [bottom.delay() for _ in range(4)] == [0.1, 0.2, 0.4, 0.5]
    assert bottom.failures == 4


def test_reset_starts_again_from_the_initial_delay() -> None:
    b = Backoff(0.5, 8.0, rng=lambda: 1.0)
    b.delay()
    b.delay()
    b.reset()
    assert b.failures == 0
    assert b.delay() == 0.5


def test_a_nonsense_range_is_refused() -> None:
    with pytest.raises(ValueError, match="initial <= cap"):
        Backoff(2.0, 1.0)
