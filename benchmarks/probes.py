"""Reading what rollguard itself says about a row: its Prometheus `/metrics` and its access log.

wrk sees only the client's side; these readers are the proof that a row did what its config asks (it
mirrored, it fell back, it logged masked lines). They run right after the measured window and cover the
whole row, warm-up included, unless a caller subtracts a reading taken before it (overload.AdmittedWindow).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import procs

_PROM_SAMPLE = re.compile(r"^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def rollguard_metrics(admin_port: int) -> list[tuple[str, dict[str, str], float]] | str:
    """rollguard's `/metrics` as (name, labels, value) samples, or what went wrong reading it."""
    status, body = procs.http_call(admin_port, "GET", "/metrics")
    if status != 200:
        return f"GET /metrics answered {status}"
    samples = []
    for line in body.decode(errors="replace").splitlines():
        if match := _PROM_SAMPLE.match(line):
            labels = dict(_PROM_LABEL.findall(match.group(2) or ""))
            with contextlib.suppress(ValueError):
                samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def rollguard_shadow_counts(admin_port: int) -> dict[str, Any]:
    """rollguard's own count of mirrors (sent, failed, dropped, skipped) and comparisons since it started:
    proof that a shadow row really mirrored, and how many the bound turned away."""
    samples = rollguard_metrics(admin_port)
    if isinstance(samples, str):
        return {"shadow_counts_error": samples}
    counts: dict[str, dict[str, float]] = {"requests": {}, "comparisons": {}}
    for name, labels, value in samples:
        if name in ("rollguard_shadow_requests_total", "rollguard_shadow_comparisons_total"):
            kind, outcome = ("requests" if "requests" in name else "comparisons"), labels.get("outcome", "")
            counts[kind][outcome] = counts[kind].get(outcome, 0) + value
    return {"shadow_counts": {k: {o: int(n) for o, n in v.items()} for k, v in counts.items()}}


def rollguard_fallback_counts(admin_port: int) -> dict[str, Any]:
    """What rollguard says happened to the candidate's share since it started (warm-up included): answers
    by role and status, failed candidate attempts by kind, fallbacks, retries, and the canary weight and
    rollout phase at the end (proof that nothing rolled the weight back during the row)."""
    samples = rollguard_metrics(admin_port)
    if isinstance(samples, str):
        return {"fallback_counts_error": samples}
    answered: dict[str, int] = {}
    failed: dict[str, int] = {}
    out: dict[str, Any] = {"answered": answered, "candidate_failures": failed, "fallbacks": 0, "retries": 0}
    for name, labels, value in samples:
        if name == "rollguard_requests_total":
            key = f"{labels.get('role')} {labels.get('code')}"
            answered[key] = answered.get(key, 0) + int(value)
        elif name == "rollguard_local_responses_total":
            key = f"rollguard {labels.get('code')}"
            answered[key] = answered.get(key, 0) + int(value)
        elif name == "rollguard_upstream_errors_total" and labels.get("role") == "candidate":
            failed[labels.get("kind", "")] = failed.get(labels.get("kind", ""), 0) + int(value)
        elif name == "rollguard_fallbacks_total":
            out["fallbacks"] += int(value)
        elif name == "rollguard_retries_total":
            out["retries"] += int(value)
        elif name == "rollguard_canary_weight_percent":
            out["weight_at_end"] = value
        elif name == "rollguard_rollout_phase" and value == 1:
            out["phase_at_end"] = labels.get("phase")
    return {"fallback_counts": out}


def access_log_summary(path: Path) -> dict[str, Any]:
    """Proof that a logged row logged: lines and bytes in its access log, and its first line (masked by
    rollguard: no raw addresses; the PII key itself never reaches the log). Waits one flush first."""
    time.sleep(0.3)  # rollguard's flusher writes every 0.2 s
    lines = size = 0
    first = b""
    try:
        with path.open("rb") as f:
            first = f.readline()
            f.seek(0)
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
    except OSError as exc:
        return {"access_log": {"error": f"{path}: {exc.strerror}"}}
    sample: Any = first.decode(errors="replace").strip()
    with contextlib.suppress(ValueError):
        sample = json.loads(sample)
    return {"access_log": {"lines": lines, "bytes": size, "first_line": sample}}
