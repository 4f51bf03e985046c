"""`numbers_kept`: which classes may skip looking for numbers jsonb would print otherwise."""

from __future__ import annotations

import enum
import warnings
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import pytest

from eventstore import Event, EventRegistry, InvalidEventError, uuid7
from eventstore._jsonb import numbers_kept


class Plain(Event):
    event_type: ClassVar[str] = "t.Plain"
    n: int
    s: str = ""
    tags: list[str] = pydantic.Field(default_factory=list)
    kind: Literal["a", "b"] = "a"
    bounded: Annotated[int, pydantic.Field(ge=0)] = 0


class Nested(pydantic.BaseModel):
    v: int


class WithNested(Event):
    event_type: ClassVar[str] = "t.WithNested"
    items: list[Nested] = pydantic.Field(default_factory=list)


class Ratio(enum.Enum):
    HALF = 0.5


class FloatField(Event):
    n: float


class AnyField(Event):
    x: Any


class MappingOfAny(Event):
    x: dict[str, Any]


class FloatEnum(Event):
    r: Ratio


class FloatInside(Event):
    n: pydantic.BaseModel | None = None
    inner: list[dict[str, float]] = pydantic.Field(default_factory=list)


class Serialized(Event):
    n: int

    @pydantic.field_serializer("n")
    def _half(self, value: int) -> float:
        return value / 2


@pytest.mark.parametrize("cls", [Plain, WithNested])
def test_classes_of_strings_ints_and_nested_models_keep_their_numbers(cls: type[Event]) -> None:
    assert numbers_kept(cls)


@pytest.mark.parametrize(
    "cls", [FloatField, AnyField, MappingOfAny, FloatEnum, FloatInside, Serialized]
)
def test_floats_untyped_values_and_serializers_mean_check(cls: type[Event]) -> None:
    assert not numbers_kept(cls)


def test_a_float_slipped_into_an_int_field_is_still_refused() -> None:
    """The skipped scan is safe: the strict comparison catches what validation never saw."""
    registry = EventRegistry([Plain])
    for wrong in (1e16, -0.0, 2.5):
        event = Plain.model_construct(n=wrong)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic warns of the unexpected float first
            with pytest.raises(InvalidEventError):
                registry.encode(event, "{}", uuid7())
