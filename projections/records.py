"""Values the projection manager reports: versions and their status (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from eventstore.subscriptions import ShardStatus

__all__ = ["ProjectionStatus", "ProjectionVersion", "VersionStatus", "subscription_name"]

VersionStatus = Literal["building", "live", "retired"]


def subscription_name(name: str, version: int) -> str:
    """Returns the name of the subscription that builds and keeps a projection version."""
    return f"projection:{name}:v{version}"


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionVersion:
    """Describes one version of a projection: building, live (serving reads) or retired."""

    name: str
    version: int
    status: str
    created_at: dt.datetime
    switched_at: dt.datetime | None

    @property
    def subscription(self) -> str:
        """Returns the name of the subscription that builds and keeps this version."""
        return subscription_name(self.name, self.version)


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Describes a projection version with its subscription's shards: lag, dead letters."""

    version: ProjectionVersion
    shards: tuple[ShardStatus, ...]
    tables: tuple[str, ...]

    @property
    def lag_events(self) -> int:
        """Returns how many events of the log its shards have not handled yet."""
        return sum(s.lag_events for s in self.shards)

    @property
    def lag_seconds(self) -> float:
        """Returns the age of the oldest event not handled yet (0 when caught up)."""
        return max((s.lag_seconds for s in self.shards), default=0.0)

    @property
    def handled(self) -> int:
        """Returns how many events its shards have handled."""
        return sum(s.handled for s in self.shards)

    @property
    def dead_letters(self) -> int:
        """Returns how many of its events are parked as dead letters."""
        return sum(s.dead_letters for s in self.shards)

    @property
    def running(self) -> str:
        """Returns its shards' status: running, paused, halted, mixed, or "not started"."""
        statuses = {s.status for s in self.shards}
        if not statuses:
            return "not started"
        return statuses.pop() if len(statuses) == 1 else "mixed"
