"""Projections: read models kept from the log exactly once, rebuilt blue/green.

See `projections.projection` for declaring one, `projections.daemon` for running them,
`projections.manager_async` for their versions' lifecycle, `projections.inline_async` for
applying one in the appending transaction, and `projections.testing` for testing one.
"""

from projections.daemon import ProjectionDaemon
from projections.errors import (
    DuplicateProjectionError,
    ProjectionError,
    ProjectionNotFoundError,
    ProjectionStateError,
    ProjectionTablesMissingError,
    ProjectionVersionBackwardsError,
)
from projections.inline import InlineProjections, apply_inline
from projections.inline_async import AsyncInlineProjections
from projections.inline_async import apply_inline as apply_inline_async
from projections.manager import ProjectionManager
from projections.manager_async import AsyncProjectionManager
from projections.projection import (
    AsyncProjection,
    Projection,
    ProjectionGroup,
    Sql,
    handles,
)
from projections.records import (
    InlineWindow,
    Mode,
    ProjectionStatus,
    ProjectionVersion,
    subscription_name,
)
from projections.subscription import subscription_for, subscription_group

__all__ = [
    "AsyncInlineProjections",
    "AsyncProjection",
    "AsyncProjectionManager",
    "DuplicateProjectionError",
    "InlineProjections",
    "InlineWindow",
    "Mode",
    "Projection",
    "ProjectionDaemon",
    "ProjectionError",
    "ProjectionGroup",
    "ProjectionManager",
    "ProjectionNotFoundError",
    "ProjectionStateError",
    "ProjectionStatus",
    "ProjectionTablesMissingError",
    "ProjectionVersion",
    "ProjectionVersionBackwardsError",
    "Sql",
    "apply_inline",
    "apply_inline_async",
    "handles",
    "subscription_for",
    "subscription_group",
    "subscription_name",
]
