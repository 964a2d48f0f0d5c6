"""A proxy's /metrics, scraped and indexed by (name, labels)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def metric_samples(admin_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape ``/metrics`` and index every sample by (name, labels)."""
    async with httpx.AsyncClient(base_url=admin_url) as c:
        text = (await c.get("/metrics")).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
