"""Comparing a baseline answer with the candidate's answer to the same request, and learning noise.

Pure: no I/O, no clock, no framework; the mirror calls it off the hot path with already-parsed answers.

Field names. A leaf of a JSON document is named by its RFC 6901 pointer, with every array index replaced
by ``*`` (``/items/*/price``), so statistics aggregate over positions and stay bounded for long arrays;
comparisons themselves are positional (``/items/0/price`` is compared with ``/items/0/price``). Scalars and
empty containers are leaves; the root of a scalar document is ``""``. Documents are walked iteratively,
so nesting depth cannot exhaust the stack, and at most ``max_fields`` leaves are examined: the rest of a
document is summarised under the single name :data:`OVERFLOW`.

Noise (after Twitter's Diffy): a field can differ between two answers of the same model to the same
request (ids, timestamps). :class:`NoiseLearner` compares, per field, how often the candidate differs from
the baseline with how often the baseline differs from itself, and calls a difference real only when the
first clearly exceeds the second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from proxy.content.contracts import MISSING
from proxy.stats.inference import wilson_interval

__all__ = [
    "MISSING",
    "OVERFLOW",
    "Answer",
    "FieldDiff",
    "FieldRates",
    "NoiseLearner",
    "PairResult",
    "compare",
    "diff_fields",
    "field_differences",
    "flatten",
    "wilson_interval",
]

OVERFLOW: Final = "/…"
MAX_NAME_CHARS: Final = 256  # a tracked field name is clipped to this, so memory does not hang on key sizes
FieldVerdict = Literal["real", "noise", "undecided"]
MIN_NOISE_RATE: Final = 0.01  # lower bound of the baseline-vs-baseline rate before a field can be noise


@dataclass(frozen=True, slots=True)
class Answer:
    """One upstream's answer to one request, as the mirror saw it.

    ``doc`` is the parsed JSON body, or :data:`MISSING` when the body was not JSON or not inspected
    (JSON ``null`` is a document). ``schema_valid`` is None when the route has no response schema;
    ``error`` is the upstream error kind (``timeout``, ``connect``, ``reset``, ``http_5xx``, ...) when the
    call failed, and then ``status`` is whatever the proxy mapped it to (0 when there was none).
    """

    status: int
    doc: Any = MISSING
    schema_valid: bool | None = None
    latency_s: float = 0.0
    score: float | None = None
    decision: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer without an upstream error."""
        return self.error is None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """Field names (normalized) that differ, each with its first example (baseline leaf, candidate leaf;
    :data:`MISSING` for an absent side), and the names present in either document."""

    differing: dict[str, tuple[Any, Any]]
    present: frozenset[str]


@dataclass(frozen=True, slots=True)
class PairResult:
    """The comparison of one (baseline, candidate) pair; see :func:`compare`."""

    status_match: bool
    both_ok: bool
    schema_valid: bool | None
    score_delta: float | None
    decision_match: bool | None
    fields: frozenset[str]
    latency_delta_s: float
    present: frozenset[str] = frozenset()
    examples: tuple[tuple[str, Any, Any], ...] = ()


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_leaf(node: Any) -> bool:
    return not isinstance(node, dict | list) or not node


def _children(node: Any, pointer: str, name: str) -> list[tuple[str, str, Any]]:
    if isinstance(node, dict):
        return [(f"{pointer}/{_escape(k)}", f"{name}/{_escape(k)}", v) for k, v in node.items()]
    return [(f"{pointer}/{i}", f"{name}/*", v) for i, v in enumerate(node)]


def _leaves(doc: Any, pointer: str, name: str) -> Iterable[tuple[str, str, Any]]:
    """(positional pointer, normalized name, leaf) in document order."""
    stack = [(pointer, name, doc)]
    while stack:
        p, n, node = stack.pop()
        if _is_leaf(node):
            yield p, n, node
        else:
            stack.extend(reversed(_children(node, p, n)))


def flatten(doc: Any, max_fields: int = 256) -> dict[str, Any]:
    """Positional JSON pointer -> leaf value, in document order, for at most ``max_fields`` leaves.

    When the document has more, :data:`OVERFLOW` maps to the number of leaves left out. :data:`MISSING`
    flattens to ``{}``.
    """
    out: dict[str, Any] = {}
    if doc is MISSING:
        return out
    omitted = 0
    for pointer, _name, leaf in _leaves(doc, "", ""):
        if len(out) < max_fields:
            out[pointer] = leaf
        else:
            omitted += 1
    if omitted:
        out[OVERFLOW] = omitted
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same_leaf(a: Any, b: Any, abs_tol: float, rel_tol: float) -> bool:
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            return bool(a == b)  # integers are counts, ids, epoch times: exact, whatever their size
        try:
            return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
        except OverflowError:  # an integer beyond a double against a float: not close
            return False
    return type(a) is type(b) and bool(a == b)


def diff_fields(
    a_doc: Any, b_doc: Any, *, abs_tol: float = 1e-9, rel_tol: float = 1e-6, max_fields: int = 256
) -> FieldDiff:
    """Compare two documents leaf by leaf, positionally; see the module docstring for names.

    A leaf differs when its values differ, when its type changes, or when it exists on one side only. A
    float and a number are equal within ``math.isclose(rel_tol, abs_tol)``; two integers only when identical
    (counts, ids, epoch times: a relative tolerance would hide a changed millisecond); ``true`` is not ``1``.
    A subtree on one side only, or replaced by a value of another type, makes every leaf of both sides
    differ. After ``max_fields`` leaves, the rest is compared by plain equality and reported as
    :data:`OVERFLOW`.
    """
    differing: dict[str, tuple[Any, Any]] = {}
    present: set[str] = set()
    budget = max_fields
    stack: list[tuple[str, Any, Any]] = [("", a_doc, b_doc)]
    while stack:
        name, a, b = stack.pop()
        if budget <= 0:
            present.add(OVERFLOW)
            if not (type(a) is type(b) and a == b):
                differing.setdefault(OVERFLOW, (MISSING, MISSING))
            continue
        if isinstance(a, dict) and isinstance(b, dict) and (a or b):
            keys = list(a) + [k for k in b if k not in a]  # document order, deterministic
            for key in reversed(keys):
                stack.append((f"{name}/{_escape(key)}", a.get(key, MISSING), b.get(key, MISSING)))
            continue
        if isinstance(a, list) and isinstance(b, list) and (a or b):
            for i in range(max(len(a), len(b)) - 1, -1, -1):
                stack.append((f"{name}/*", a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING))
            continue
        if _is_leaf(a) and _is_leaf(b) and a is not MISSING and b is not MISSING:
            budget -= 1
            present.add(name)
            if not _same_leaf(a, b, abs_tol, rel_tol):
                differing.setdefault(name, (a, b))
            continue
        # One side absent, or a container against something else: every leaf on either side differs.
        for side in (a, b):
            if side is MISSING:
                continue
            for _pointer, leaf_name, _leaf in _leaves(side, "", name):
                if budget <= 0:
                    present.add(OVERFLOW)
                    differing.setdefault(OVERFLOW, (MISSING, MISSING))
                    break
                budget -= 1
                present.add(leaf_name)
                differing.setdefault(leaf_name, (a, b))
    return FieldDiff(differing=differing, present=frozenset(present))


def field_differences(
    a_doc: Any, b_doc: Any, *, abs_tol: float = 1e-9, rel_tol: float = 1e-6, max_fields: int = 256
) -> set[str]:
    """Normalized names of the leaves that differ between two documents (see :func:`diff_fields`)."""
    d = diff_fields(a_doc, b_doc, abs_tol=abs_tol, rel_tol=rel_tol, max_fields=max_fields)
    return set(d.differing)


def compare(
    baseline: Answer,
    candidate: Answer,
    *,
    abs_tol: float = 1e-9,
    rel_tol: float = 1e-6,
    max_fields: int = 256,
) -> PairResult:
    """Compare the candidate's answer with the baseline's for the same request.

    Fields are compared only when both answers are ok and parsed: the body of an error says nothing about
    the model's fields, and would teach the noise learner wrong rates. ``score_delta`` is candidate minus
    baseline; it and ``decision_match`` are None when either side lacks the value. ``examples`` holds, per
    differing field, (name, baseline leaf, candidate leaf) for the first position where it differs.
    """
    both_ok = baseline.ok and candidate.ok
    fields: frozenset[str] = frozenset()
    present: frozenset[str] = frozenset()
    examples: tuple[tuple[str, Any, Any], ...] = ()
    if both_ok and baseline.doc is not MISSING and candidate.doc is not MISSING:
        d = diff_fields(baseline.doc, candidate.doc, abs_tol=abs_tol, rel_tol=rel_tol, max_fields=max_fields)
        fields = frozenset(d.differing)
        present = d.present
        examples = tuple((name, a, b) for name, (a, b) in d.differing.items())
    return PairResult(
        status_match=baseline.status == candidate.status,
        both_ok=both_ok,
        schema_valid=candidate.schema_valid,
        score_delta=(
            candidate.score - baseline.score
            if candidate.score is not None and baseline.score is not None
            else None
        ),
        decision_match=(
            candidate.decision == baseline.decision
            if candidate.decision is not None and baseline.decision is not None
            else None
        ),
        fields=fields,
        latency_delta_s=candidate.latency_s - baseline.latency_s,
        present=present,
        examples=examples,
    )


@dataclass(frozen=True, slots=True)
class FieldRates:
    candidate_rate: float | None  # share of pairs where the candidate differed from the baseline
    noise_rate: float | None  # share of baseline-vs-baseline pairs that differed
    pairs: int  # candidate pairs in which the field was present
    noise_pairs: int
    pair_differences: int
    noise_differences: int


class NoiseLearner:
    """Per-field difference rates, candidate vs baseline and baseline vs baseline, and a verdict.

    ``classify(field)``, with c = candidate rate, n = noise rate and [lo, hi] Wilson bounds at ``z``:

    - ``undecided`` while either rate has fewer than ``min_samples`` observations, or the evidence is
      between the two cases below;
    - ``real`` when lo(c) - hi(n) >= ``abs_threshold`` and lo(c) >= ``rel_factor`` * hi(n): the candidate
      differs by a practically large margin, beyond what noise explains, with one-sided confidence
      >= 1 - 2 * (1 - Phi(z)) (95% at the default z = 1.96, by Bonferroni over the two bounds);
    - ``noise`` when hi(c) - lo(n) < ``abs_threshold`` or hi(c) < ``rel_factor`` * lo(n): with the same
      confidence, one of the two margins fails, so noise explains the candidate's rate. A field that
      never differs also ends up here.

    Memory: at most ``max_fields`` names are tracked, first come first served; later names share the
    :data:`OVERFLOW` counters.
    """

    def __init__(
        self,
        *,
        min_samples: int = 50,
        abs_threshold: float = 0.05,
        rel_factor: float = 2.0,
        max_fields: int = 512,
        z: float = 1.96,
    ) -> None:
        self.min_samples = min_samples
        self.abs_threshold = abs_threshold
        self.rel_factor = rel_factor
        self.max_fields = max_fields
        self.z = z
        # [pairs, pair_differences, noise_pairs, noise_differences] per tracked name
        self._counts: dict[str, list[int]] = {}

    def key(self, field: str) -> str:
        """The name ``field`` is counted under: itself (clipped to MAX_NAME_CHARS) when tracked or when
        there is room, else OVERFLOW."""
        field = field[:MAX_NAME_CHARS]
        if field in self._counts or field == OVERFLOW or len(self._counts) < self.max_fields:
            return field
        return OVERFLOW

    def tracks(self, field: str) -> bool:
        return field[:MAX_NAME_CHARS] in self._counts

    def _observe(self, differing: Iterable[str], present: Iterable[str], offset: int) -> None:
        differing = set(differing)
        # Sorted, so which names win the last free slots does not depend on set iteration order.
        keys = {name: self._slot(name) for name in sorted(differing.union(present))}
        diff_keys = {keys[name] for name in differing}
        for k in set(keys.values()):
            row = self._counts[k]
            row[offset] += 1
            if k in diff_keys:
                row[offset + 1] += 1

    def _slot(self, field: str) -> str:
        k = self.key(field)
        if k not in self._counts:
            self._counts[k] = [0, 0, 0, 0]
        return k

    def observe_pair(self, fields_differing: Iterable[str], fields_present: Iterable[str]) -> None:
        """One candidate-vs-baseline pair; a differing field counts as present even if not listed."""
        self._observe(fields_differing, fields_present, 0)

    def observe_noise(self, fields_differing: Iterable[str], fields_present: Iterable[str]) -> None:
        """One baseline-vs-baseline pair (the same request answered twice)."""
        self._observe(fields_differing, fields_present, 2)

    def fields(self) -> list[str]:
        """Tracked names, in the order first seen."""
        return list(self._counts)

    def rates(self, field: str) -> FieldRates:
        pairs, pair_diff, noise, noise_diff = self._counts.get(self.key(field), (0, 0, 0, 0))
        return FieldRates(
            candidate_rate=pair_diff / pairs if pairs else None,
            noise_rate=noise_diff / noise if noise else None,
            pairs=pairs,
            noise_pairs=noise,
            pair_differences=pair_diff,
            noise_differences=noise_diff,
        )

    def classify(self, field: str) -> FieldVerdict:
        r = self.rates(field)
        if r.pairs < self.min_samples or r.noise_pairs < self.min_samples:
            return "undecided"
        c_lo, c_hi = wilson_interval(r.pair_differences, r.pairs, self.z)
        n_lo, n_hi = wilson_interval(r.noise_differences, r.noise_pairs, self.z)
        if c_lo - n_hi >= self.abs_threshold and c_lo >= self.rel_factor * n_hi:
            return "real"
        # Noise means the baseline really does vary on its own and explains the candidate's rate. A field
        # the baseline never changes, which the candidate changes a little, is not noise: it stays
        # undecided (a small real difference below the thresholds, or too little evidence).
        if n_lo >= MIN_NOISE_RATE and (c_hi - n_lo < self.abs_threshold or c_hi < self.rel_factor * n_lo):
            return "noise"
        return "undecided"
