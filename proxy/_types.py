"""Types shared across layers: the upstream roles, and the protocols through which a lower layer reaches
an upper one without importing it (the data plane feeds the rollout's evidence through ``EvidenceSink``;
the admin API reloads through ``Reloader``)."""

from __future__ import annotations

from typing import Any, Literal, Protocol

Role = Literal["baseline", "candidate"]


class Reloader(Protocol):
    """What the admin API needs of the config reloader (``app/reload.py``): its status and a reload."""

    def status(self) -> dict[str, Any]: ...

    async def reload(self, actor: str) -> dict[str, Any]:
        """Apply the config file as it is now; raises ``errors.ReloadFailed`` when nothing was applied."""
        ...
