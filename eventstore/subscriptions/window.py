"""Snapshot windows over the log: which committed transactions a reader has not seen yet (pure).

A `global_position` is drawn when a row is inserted but becomes visible when its transaction
commits, so transactions commit out of position order and a reader that polls "position >
checkpoint" silently skips events. The reader instead remembers two Postgres snapshots (the
technique of PgQ):

- ``low``: everything visible in it has been handled;
- ``high``: a later snapshot; the *window* is every event whose transaction is visible in
  ``high`` and not visible in ``low``, read in position order;
- ``position``: how far into the current window the reader got.

When a window is drained, ``low := high`` and a new ``high`` is taken. Every committed
transaction becomes visible in exactly one window, so nothing is skipped and nothing is
read twice; a long transaction holds back only its own events (it stays in ``low``'s
in-progress list until it commits, and lands in whichever window first sees it).

A window's candidates are found by transaction id ranges, never by a visibility filter over
the whole table: the ids from ``low.xmax`` up to ``high.xmax``, plus ``low``'s in-progress
ids. A new window starts at a lower bound of its rows' positions, so reading it by
position never walks the rows before it.

``high`` must be a real snapshot. A snapshot "capped" at some transaction id (every id
below visible as before, every id above invisible) is a consistent *set* of transactions,
but not a consistent *moment*: transaction ids are drawn at a transaction's first write,
not at commit, so a transaction with a higher id may have committed first, and a later
transaction with a lower id may have appended to the same stream after it. A capped window
would then hand out the later events of that stream before the earlier ones.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Final, Self

from eventstore.errors import InvalidArgumentError

__all__ = ["NOTHING_SEEN", "PgSnapshot", "Window", "covers"]

# Transaction ids below 3 are reserved by Postgres (invalid, bootstrap, frozen).
_FIRST_NORMAL_XID: Final = 3


@dataclasses.dataclass(frozen=True, slots=True)
class PgSnapshot:
    """Holds a Postgres ``pg_snapshot``: ids below ``xmin`` are done, ``xip`` are in progress.

    A transaction id ``x`` is visible (committed, or aborted and so without rows) when
    ``x < xmin``, or ``x < xmax`` and ``x`` is not in ``xip``.
    """

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> PgSnapshot:
        """Parses Postgres's text form, ``xmin:xmax:xip1,xip2``."""
        try:
            xmin, xmax, xip = text.split(":")
            ids = tuple(sorted(int(x) for x in xip.split(",") if x))
            snapshot = cls(int(xmin), int(xmax), ids)
        except ValueError:
            raise InvalidArgumentError(f"not a pg_snapshot: {text!r}") from None
        return snapshot.checked()

    def checked(self) -> Self:
        """Returns the snapshot if it is well formed, else raises."""
        if not self.xmin <= self.xmax or any(not self.xmin <= x < self.xmax for x in self.xip):
            raise InvalidArgumentError(f"inconsistent pg_snapshot: {self}")
        return self

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, self.xip))}"

    def visible(self, xid: int) -> bool:
        """Tells whether the transaction ``xid`` is finished as of this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


# The reader that has seen nothing: no transaction id is visible in it.
NOTHING_SEEN: Final = PgSnapshot(_FIRST_NORMAL_XID, _FIRST_NORMAL_XID)


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """Holds a reader's place in the log: the window ``(low, high]`` and the position in it.

    ``high`` is None between windows (drained, no new snapshot taken yet).
    """

    low: PgSnapshot = NOTHING_SEEN
    high: PgSnapshot | None = None
    position: int = 0

    @property
    def is_open(self) -> bool:
        """Tells whether there is a window being read."""
        return self.high is not None

    def open(self, current: PgSnapshot, start: int = 0) -> Window:
        """Opens the next window up to ``current``, its rows at positions above ``start``."""
        high = current
        if high.xmax < self.low.xmax:
            raise InvalidArgumentError(
                f"snapshot {high} is older than the checkpoint's {self.low}: was the database "
                "restored from a backup, or is this a different cluster?"
            )
        return Window(self.low, high, max(0, start))

    def advanced(self, position: int) -> Window:
        """Returns the window after handling events up to ``position``."""
        return dataclasses.replace(self, position=max(self.position, position))

    def drained(self) -> Window:
        """Returns the state after the whole window was handled: ``low := high``."""
        if self.high is None:
            return self
        return Window(self.high, None, 0)

    def candidate_ranges(self) -> tuple[int, int, tuple[int, ...]]:
        """Returns ``(from_xid, to_xid, extra_xids)``: where the window's rows can be.

        A row is in the window when its transaction id is in ``[from_xid, to_xid)`` or in
        ``extra_xids`` (``low``'s in-progress ids), and it is visible in ``high``.
        """
        if self.high is None:
            raise InvalidArgumentError("no open window")
        extra = tuple(x for x in self.low.xip if self.high.visible(x))
        return self.low.xmax, self.high.xmax, extra

    def contains(self, xid: int) -> bool:
        """Tells whether a transaction belongs to this window (visible in high, not in low)."""
        return self.high is not None and self.high.visible(xid) and not self.low.visible(xid)

    def to_token(self) -> str:
        """Encodes the place as an opaque, URL-safe token (see `from_token`)."""
        state = [str(self.low), None if self.high is None else str(self.high), self.position]
        raw = json.dumps(state, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> Window:
        """Decodes a token made by `to_token`; raises `InvalidArgumentError` on anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            low, high, position = json.loads(raw)
            window = cls(
                PgSnapshot.parse(low),
                None if high is None else PgSnapshot.parse(high),
                int(position),
            )
        except (ValueError, TypeError, json.JSONDecodeError):
            raise InvalidArgumentError(f"not a read_all token: {token!r}") from None
        return window


def covers(low: PgSnapshot, target: PgSnapshot) -> bool:
    """Tells whether every transaction finished as of ``target`` is visible in ``low``.

    True once a reader at ``low`` has handled everything committed before ``target``.
    """
    if low.xmax < target.xmax:
        # Ids in [low.xmax, target.xmax) are unseen, so all must have been running at target.
        running = sum(1 for x in target.xip if x >= low.xmax)
        if running < target.xmax - low.xmax:
            return False
    return all(not target.visible(x) for x in low.xip if x < target.xmax)
