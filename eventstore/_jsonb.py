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
import operator
import re
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Final

import pydantic

__all__ = ["LossyValueError", "as_stored", "exact_fields", "may_change", "numbers_kept", "same"]

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


# The leaf types `exact_fields` accepts: each one's JSON validates back to an equal value
# of the same exact type, whatever the value. Not float, bytes or containers; and not
# datetime or time: an aware one can read back changed (a local time in a DST gap, an
# offset with seconds, which the JSON rounds), which the full round trip refuses.
_EXACT_LEAVES: Final = frozenset({str, int, bool, uuid.UUID, datetime.date})
# The model_config keys that leave validation and serialization as they are for such
# fields (an Event's own: frozen, extra; and a few descriptive ones).
_NEUTRAL_CONFIG: Final = frozenset(
    {"frozen", "extra", "title", "json_schema_extra", "protected_namespaces", "defer_build"}
    | {"use_attribute_docstrings"}
)


def exact_fields(model: type[pydantic.BaseModel]) -> Callable[[dict[str, Any]], bool] | None:
    """Returns a test that an instance's field values read back unchanged, or None.

    A model qualifies when every field is declared as one of a few leaf types (str, int,
    bool, UUID, date, enums of distinct str or int values, each optionally ``| None``)
    with no constraint, alias or exclusion, and the model has no validator, serializer,
    computed field, post-init hook or configuration that changes validation. For such a
    model, a value of exactly its field's declared type (``type(v) is str``, not a
    subclass) is serialized to JSON that validates back to an equal value of the same type:
    the registry's round trip through pydantic can only confirm it.

    The test returned checks exactly that: the instance holds every field, nothing else,
    each value of an accepted exact type. True is certain; False (a value slipped in without
    validation by ``model_construct``, a subclass, a missing field) only means "do the full
    round trip". It costs a fifth of that round trip.
    """
    if not _plain_model(model):
        return None
    names: list[str] = []
    allowed: list[frozenset[type[Any]]] = []
    for name, field in model.model_fields.items():
        kinds = _exact_kinds(field)
        if kinds is None:
            return None
        names.append(name)
        allowed.append(kinds)
    return _exact_test(tuple(names), tuple(allowed))


def _plain_model(model: type[pydantic.BaseModel]) -> bool:
    """Tells whether a model validates and serializes its fields with nothing of its own."""
    decorators = model.__pydantic_decorators__
    if any(
        getattr(decorators, kind)
        for kind in (
            "validators",
            "field_validators",
            "root_validators",
            "field_serializers",
            "model_serializers",
            "model_validators",
            "computed_fields",
        )
    ):
        return False
    if getattr(model, "__pydantic_post_init__", None) is not None:
        return False
    if getattr(model, "__pydantic_root_model__", False):
        return False
    if "__get_pydantic_core_schema__" in vars(model):
        return False
    config = model.model_config
    if not set(config) <= _NEUTRAL_CONFIG:
        return False
    return config.get("extra") in (None, "forbid", "ignore")


def _exact_kinds(field: Any) -> frozenset[type[Any]] | None:
    """Returns the exact types a field's value may have to be kept as it is, or None."""
    if field.metadata or field.exclude:
        return None
    if field.alias or field.validation_alias or field.serialization_alias:
        return None
    annotation = field.annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = typing.get_args(annotation)
    else:
        members = (annotation,)
    kinds: set[type[Any]] = set()
    for member in members:
        leaf = member is type(None) or member in _EXACT_LEAVES
        if not leaf and not (
            isinstance(member, type) and issubclass(member, enum.Enum) and _plain_enum(member)
        ):
            return None
        kinds.add(member)
    return frozenset(kinds)


def _plain_enum(kind: type[enum.Enum]) -> bool:
    """Tells whether an enum's members all have str or int (not bool) values, and distinct
    ones, so that a member's value validates back to that member."""
    values = [member.value for member in kind]
    return (
        bool(values)
        and all(type(v) in (str, int) for v in values)
        and (len(set(values)) == len(values))
    )


def _exact_test(
    names: tuple[str, ...], allowed: tuple[frozenset[type[Any]], ...]
) -> Callable[[dict[str, Any]], bool]:
    count = len(names)
    if count == 0:
        return lambda values: not values
    getter = operator.itemgetter(*names)
    single = all(len(kinds) == 1 for kinds in allowed)
    if count == 1:
        (name,), (kinds,) = names, allowed

        def one(values: dict[str, Any]) -> bool:
            return len(values) == 1 and name in values and type(values[name]) in kinds

        return one
    if single:  # the common case: one tuple comparison
        expected = tuple(next(iter(kinds)) for kinds in allowed)

        def exact(values: dict[str, Any]) -> bool:
            try:
                return len(values) == count and tuple(map(type, getter(values))) == expected
            except KeyError:
                return False

        return exact

    def any_of(values: dict[str, Any]) -> bool:
        try:
            found = getter(values)
        except KeyError:
            return False
        return len(values) == count and all(
            type(v) in kinds for v, kinds in zip(found, allowed, strict=True)
        )

    return any_of


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
