"""Shared by the micro-benchmarks (``bench_*.py``): one timing rule and one way to end a run."""

from __future__ import annotations

import platform
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPEAT = 5


def best_us(fn: Callable[[], object]) -> tuple[float, int]:
    """Best of REPEAT runs, in microseconds per call, and the loop count autorange chose."""
    timer = timeit.Timer(fn)
    number = max(1, timer.autorange()[0] // 2)  # ~0.1 s a run: a whole table stays well under 20 s
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e6, number


def finish(out: Path | None, repo: Path, results: list[dict[str, Any]]) -> None:
    """The table's footer; with ``--out``, the result file with the machine it ran on."""
    print(f"\nbest of {REPEAT}; Python {platform.python_version()} on {platform.machine()}")
    if out is not None:
        import machine  # benchmarks/machine.py: what the numbers were measured on

        machine.write_result(out, repo, results)
