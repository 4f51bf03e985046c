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
import datetime
import decimal
import enum
import json
import math
import re
import types
import typing
import uuid
from typing import Any, Final

import pydantic

__all__ = ["LossyValueError", "as_stored", "may_change", "numbers_kept", "same"]

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


def numbers_kept(model: type[pydantic.BaseModel]) -> bool:
    """Tells whether a model's JSON can only hold numbers that jsonb prints back unchanged.

    True when every field is declared as one of a few types whose JSON is a string, an
    integer, a boolean or null (str, int, bool, bytes, UUID, dates and times,
    enums and literals of those), or a container or nested model of them, with no custom
    serializer anywhere. Then `may_change` has nothing to find, since an ``int`` is kept
    exactly. A value of the wrong type slipped in without validation (``model_construct``,
    ``model_copy``) still fails the registry's strict comparison after validation. Anything
    else (floats, ``Any``, unions with floats, serializers) is False: "check".
    """
    return _model_kept(model, set())


_KEPT_LEAVES: Final = frozenset(
    {str, int, bool, bytes, type(None), uuid.UUID, datetime.datetime, datetime.date}
    | {datetime.time}
)
_CONTAINERS: Final = frozenset(
    {list, tuple, set, frozenset, dict, collections.abc.Sequence, collections.abc.Mapping}
)


def _model_kept(model: type[pydantic.BaseModel], seen: set[type[Any]]) -> bool:
    if model in seen:
        return True
    seen.add(model)
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return False
    if decorators.computed_fields:
        return False
    for field in model.model_fields.values():
        if not all(_constraint(item) for item in field.metadata):
            return False
        if not _annotation_kept(field.annotation, seen):
            return False
    return True


def _constraint(item: object) -> bool:
    """Tells whether field metadata is a plain constraint (``Field(ge=0)``, ``MaxLen``)."""
    return type(item).__module__ in {"annotated_types", "pydantic.types", "pydantic.fields"}


def _annotation_kept(annotation: Any, seen: set[type[Any]]) -> bool:
    if annotation in _KEPT_LEAVES:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return all(_constraint(x) for x in extras) and _annotation_kept(base, seen)
    if origin is typing.Literal:
        return all(type(v) in (str, int, bool, type(None)) for v in typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        return all(_annotation_kept(arg, seen) for arg in typing.get_args(annotation))
    if origin in _CONTAINERS:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return bool(args) and all(_annotation_kept(arg, seen) for arg in args)
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return all(type(m.value) in (str, int, bool) for m in annotation)
        if issubclass(annotation, pydantic.BaseModel):
            return _model_kept(annotation, seen)
    return False


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
