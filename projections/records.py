"""Values the projection manager reports: versions and their status (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from eventstore.subscriptions import ShardStatus
from eventstore.subscriptions.window import PgSnapshot

__all__ = [
    "InlineWindow",
    "Mode",
    "ProjectionStatus",
    "ProjectionVersion",
    "VersionStatus",
    "subscription_name",
]

VersionStatus = Literal["building", "live", "retired"]
Mode = Literal["daemon", "inline"]


@dataclasses.dataclass(frozen=True, slots=True)
class InlineWindow:
    """Holds the transactions whose events a version applied inline, in their own transaction.

    They are the transactions visible in ``until`` and not in ``since``: ``since`` is the
    snapshot taken when the version went inline (everything visible in it was the daemon's
    to apply), ``until`` the one taken when it went back to the daemon, or None while it is
    inline (every transaction after ``since`` applies its own events). The daemon skips the
    events of these transactions, and applies every other.
    """

    since: PgSnapshot
    until: PgSnapshot | None = None

    @classmethod
    def of(cls, since: str | None, until: str | None) -> InlineWindow | None:
        """Returns the window stored as text, or None for a version never inline."""
        if since is None:
            return None
        return cls(PgSnapshot.parse(since), None if until is None else PgSnapshot.parse(until))

    @property
    def is_open(self) -> bool:
        """Tells whether the version is inline now."""
        return self.until is None

    def applied_inline(self, transaction_id: int) -> bool:
        """Tells whether the events of this transaction were applied inline."""
        if self.since.visible(transaction_id):
            return False
        return self.until is None or self.until.visible(transaction_id)


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
