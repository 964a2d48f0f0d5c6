"""The candidate's identity against the rollout state: manifest check, and the controller's reset rule.

The state records which candidate (version and manifest digest) it was built for. Whenever the proxy
learns its configured candidate — at start, and again on every config reload — a different one sends the
rollout back to ``idle`` at weight 0 with a decision-log entry, never resuming an untested version at the
old weight; the same candidate keeps its phase, step and weight. After a promotion the candidate serves
every request, so that reset would hand production back to the old baseline: a new candidate is refused
until the promoted version is the configured baseline.
"""

from __future__ import annotations

import logging

from proxy.clock import utc_now
from proxy.config.keys import load_public_key
from proxy.config.model import Config
from proxy.errors import ConfigError
from proxy.rollout.manifest import ManifestVerdict, verify
from proxy.rollout.state import Phase, RolloutState, initial, reconcile_candidate, weight_to_bp
from proxy.rollout.store import StateStore

log = logging.getLogger("rollguard")


def check_candidate(config: Config) -> ManifestVerdict:
    """The candidate's release manifest, when one is configured or required."""
    if config.candidate.manifest is None:
        return ManifestVerdict(
            ok=not config.security.require_signed_candidate, reason="no manifest configured"
        )
    trusted = {k.name: load_public_key(k.key) for k in config.security.trusted_keys}
    verdict = verify(config.candidate.manifest, trusted, expected_version=config.candidate.version)
    if not config.security.require_signed_candidate and not verdict.ok:
        # Recorded and shown, but only enforced when security.require_signed_candidate says so.
        return ManifestVerdict(ok=True, reason=f"not enforced: {verdict.reason}", digest=verdict.digest)
    return verdict


def refuse_reverting_promotion(config: Config, state: RolloutState) -> None:
    """Raise when resetting ``state`` for ``config``'s candidate would send promoted traffic back to an
    older baseline: the promoted version must become the baseline before the candidate changes."""
    promoted = state.candidate_version
    if state.phase is not Phase.PROMOTED or config.baseline.version == promoted:
        return
    old = config.baseline.version
    raise ConfigError(
        "upstreams.baseline.version",
        f"{promoted} was promoted and serves all traffic; a new candidate ({config.candidate.version}) "
        f"with {old} as the baseline would send every request back to {old}. Make {promoted} the "
        f"baseline first (upstreams.baseline: its url, version {promoted}), then change the candidate "
        "(README: After a promotion)",
    )


async def load_state(config: Config, store: StateStore, verdict: ManifestVerdict) -> None:
    """Load (or create) the rollout state at start, then apply :func:`reconcile_state`."""
    digest = verdict.digest
    await store.load(
        lambda: initial(config.candidate.version, weight_to_bp(config.canary.weight), utc_now(), digest)
    )
    await reconcile_state(config, store, verdict)


async def reconcile_state(config: Config, store: StateStore, verdict: ManifestVerdict) -> str | None:
    """A different candidate (or manifest) than the state's resets the rollout to idle, logged as
    ``reset``; a refused manifest is logged as ``candidate_blocked``. Returns the reset's reason, if any."""
    version, digest = config.candidate.version, verdict.digest
    reset = reconcile_candidate(store.current, version, utc_now(), digest)
    if reset is not None:
        refuse_reverting_promotion(config, store.current)
        log.warning("%s", reset.reason)
        await store.update(
            lambda s: reconcile_candidate(s, version, utc_now(), digest) or s,
            {"ts": utc_now(), "actor": "rollguard", "action": "reset", "reason": reset.reason},
        )
    if not verdict.ok:
        log.error("candidate %s blocked: %s", version, verdict.reason)
        await store.append(
            {
                "ts": utc_now(),
                "actor": "rollguard",
                "action": "candidate_blocked",
                "reason": verdict.reason,
                "manifest": verdict.to_json(),
            }
        )
    return None if reset is None else reset.reason
