"""The rank-sum statistics against the textbook walk over tie groups: the same floats, to the last bit
(the gates' verdicts and their printed values must not move with how the ranks are summed)."""

from __future__ import annotations

import math
import random

import pytest

from proxy.stats.inference import mann_whitney_greater, mann_whitney_z, rank_shift


def textbook(x: list[float], y: list[float]) -> tuple[float, float]:
    """U of x by midranks, one tie group at a time, and the tie-corrected variance."""
    n1, n2 = len(x), len(y)
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    n = n1 + n2
    rank_sum = ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        t = j - i + 1
        if t > 1:
            ties += t**3 - t
        rank_sum += ((i + j) / 2.0 + 1.0) * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    return rank_sum - n1 * (n1 + 1) / 2.0, n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))


@pytest.mark.parametrize("levels", [2, 5, 60, 10**9])
def test_rank_statistics_are_the_textbook_ones_bit_for_bit(levels: int) -> None:
    rng = random.Random(levels)
    for trial in range(300):
        x = [rng.randrange(levels) / 7 for _ in range(rng.randrange(1, 400))]
        y = [rng.randrange(levels) / 7 for _ in range(rng.randrange(1, 400))]
        if trial % 4 == 0:
            x += [0.0, -0.0]  # equal values, whatever their sign
        u, var = textbook(x, y)
        scale = float(len(x) * len(y))
        assert rank_shift(x, y) == (u / scale - 0.5, var / (scale * scale))
        if var > 0:
            assert mann_whitney_greater(x, y)[0] == u
            z = mann_whitney_z(x, y)
            d = u - len(x) * len(y) / 2.0
            assert z == ((d - math.copysign(0.5, d)) if d else 0.0) / math.sqrt(var)
