"""What Postgres's ``jsonb`` gives back for a JSON text, and a strict "same value" (pure).

``jsonb`` does not store the text it is given. It parses numbers as ``numeric`` and prints
them back without an exponent (``1e16`` comes back as ``10000000000000000``, which Python
reads as an ``int``); ``numeric`` has no negative zero (``-0.0`` comes back as ``0.0``); and
it keeps one value per key, in its own order (shorter keys first, then bytewise). A payload
check that validated the JSON pydantic produced would miss all of that, so the registry
validates what `as_stored` returns instead: the JSON a read will get.
"""

from __future__ import annotations

import collections
import decimal
import json
import math
import re
from typing import Any, Final

__all__ = ["LossyValueError", "as_stored", "may_change", "same"]

# A number with an exponent, or a negative zero: the only number texts jsonb prints back
# differently in a way that changes the value read (a cheap, conservative test).
_REWRITTEN_NUMBER: Final = re.compile(r"[0-9][eE]|-0")


class LossyValueError(ValueError):
    """Reports a JSON value ``jsonb`` cannot keep as it is (a negative zero)."""


def may_change(text: str, ordered: bool) -> bool:
    """Tells whether storing ``text`` as jsonb might change what a read gets back.

    False is certain: no number jsonb would print differently, and (``ordered`` False) no
    ordered mapping whose key order jsonb could change. True only means "check".
    """
    return ordered or _REWRITTEN_NUMBER.search(text) is not None


def as_stored(text: str) -> str:
    """Returns the JSON text a read gets back after ``text`` was stored as ``jsonb``."""
    value = json.loads(text, parse_float=_numeric, object_pairs_hook=_jsonb_object)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _numeric(literal: str) -> float | int:
    number = decimal.Decimal(literal)
    if number.is_zero() and number.is_signed():
        raise LossyValueError(f"jsonb has no negative zero ({literal} would read back as 0)")
    printed = format(number, "f")  # numeric prints without an exponent, keeping its scale
    return float(printed) if "." in printed else int(printed)


def _jsonb_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    kept = dict(pairs)  # the last value of a repeated key wins, as in jsonb
    order = sorted(kept, key=lambda k: (len(k.encode()), k.encode()))
    return {key: kept[key] for key in order}


def same(a: Any, b: Any) -> bool:
    """Tells whether two decoded values are the same: equal, of the same types throughout.

    Stricter than ``==``: ``1 == 1.0`` and ``0.0 == -0.0`` are not the same value here, and
    an ordered mapping must keep its order. A plain ``dict``'s order carries no meaning.
    """
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:  # the common case (an event's fields): scalars compared inline
        if a.keys() != b.keys():
            return False
        for key, value in a.items():
            other = b[key]
            inner = type(value)
            if inner is not type(other):
                return False
            if inner in _PLAIN:
                if value != other:
                    return False
            elif not same(value, other):
                return False
        return True
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, collections.OrderedDict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__pydantic_fields__"):
        return same(a.__dict__, b.__dict__)
    return bool(a == b)


# Exact types whose equality is already strict (same type on both sides, checked first).
_PLAIN: Final = frozenset({str, int, bool, type(None), bytes})
