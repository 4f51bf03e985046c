"""The subscription engine: read the whole log in commit order, from durable checkpoints.

See `eventstore.subscriptions.window` for how nothing is ever skipped, and
`eventstore.subscriptions.engine_async` for one shard's batch cycle.

The names backed by Postgres are imported on first use: the Postgres modules import this
package's pure modules, so importing them here eagerly would be circular.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eventstore.subscriptions.records import (
    DeadLetter,
    LogPage,
    RetryOutcome,
    ShardStatus,
    TransactionInfo,
)
from eventstore.subscriptions.subscription import (
    Batch,
    FailurePolicy,
    RetryLater,
    Subscription,
    SubscriptionGroup,
)

if TYPE_CHECKING:
    from eventstore.postgres.subscriptions import SubscriptionStore
    from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
    from eventstore.subscriptions.engine import discard_dead_letters, retry_dead_letters
    from eventstore.subscriptions.runner import SubscriptionRunner

__all__ = [
    "AsyncSubscriptionStore",
    "Batch",
    "DeadLetter",
    "FailurePolicy",
    "LogPage",
    "RetryLater",
    "RetryOutcome",
    "ShardStatus",
    "Subscription",
    "SubscriptionGroup",
    "SubscriptionRunner",
    "SubscriptionStore",
    "TransactionInfo",
    "discard_dead_letters",
    "retry_dead_letters",
]

_LAZY = {
    "AsyncSubscriptionStore": "eventstore.postgres.subscriptions_async",
    "SubscriptionStore": "eventstore.postgres.subscriptions",
    "SubscriptionRunner": "eventstore.subscriptions.runner",
    "discard_dead_letters": "eventstore.subscriptions.engine",
    "retry_dead_letters": "eventstore.subscriptions.engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
