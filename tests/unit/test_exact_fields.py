"""`exact_fields`: which events may skip the encoder's round trip through pydantic, and when.

The registry validates every appended event's JSON back into its class and compares the
values (`eventstore.registry._refuse_lossy`). For classes whose fields are plain leaves,
a value of exactly the declared type can only come back equal, so the registry skips that
round trip when `exact_fields`' test says so. These tests pin both halves: which classes
qualify, and that the test is never True where the round trip would refuse.
"""

from __future__ import annotations

import datetime
import enum
import uuid
import warnings
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import pytest

from eventstore import Event, EventRegistry, InvalidEventError, uuid7
from eventstore._jsonb import exact_fields
from eventstore.registry import _refuse_lossy


class Colour(enum.Enum):
    RED = "red"
    TWO = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Flag(enum.Enum):
    ON = True


class Plain(Event):
    event_type: ClassVar[str] = "t.exact.Plain"
    name: str
    amount: int
    active: bool
    ref: uuid.UUID
    day: datetime.date
    colour: Colour
    level: Level
    note: str | None = None


class One(Event):
    event_type: ClassVar[str] = "t.exact.One"
    n: int


class Empty(Event):
    event_type: ClassVar[str] = "t.exact.Empty"


class Inner(pydantic.BaseModel):
    v: int


def _class(annotation: Any, default: Any = ..., **config: Any) -> type[Event]:
    namespace: dict[str, Any] = {
        "__annotations__": {"event_type": ClassVar[str], "x": annotation},
        "event_type": "t.exact.Made",
    }
    if default is not ...:
        namespace["x"] = default
    if config:
        namespace["model_config"] = pydantic.ConfigDict(**config)  # type: ignore[typeddict-item]
    return type("Made", (Event,), namespace)


class Validated(Event):
    event_type: ClassVar[str] = "t.exact.Validated"
    x: str

    @pydantic.field_validator("x")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class ModelValidated(Event):
    event_type: ClassVar[str] = "t.exact.ModelValidated"
    x: str

    @pydantic.model_validator(mode="after")
    def check(self) -> ModelValidated:
        return self


class Serialized(Event):
    event_type: ClassVar[str] = "t.exact.Serialized"
    x: str

    @pydantic.field_serializer("x")
    def lower(self, value: str) -> str:
        return value.lower()


class Computed(Event):
    event_type: ClassVar[str] = "t.exact.Computed"
    x: str

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def y(self) -> str:
        return self.x


class PostInit(Event):
    event_type: ClassVar[str] = "t.exact.PostInit"
    x: str

    def model_post_init(self, context: Any) -> None:
        pass


REFUSED: list[type[Event]] = [
    _class(float),
    _class(datetime.datetime),
    _class(datetime.time),
    _class(bytes),
    _class(list[int]),
    _class(dict[str, int]),
    _class(Inner),
    _class(Any),
    _class(Literal["a", "b"]),
    _class(Annotated[int, pydantic.Field(ge=0)]),
    _class(int, pydantic.Field(alias="y")),
    _class(int, pydantic.Field(serialization_alias="y")),
    _class(int, pydantic.Field(validation_alias="y")),
    _class(int, pydantic.Field(default=0, exclude=True)),
    _class(int | float),
    _class(Flag),
    _class(str, str_strip_whitespace=True),
    _class(str, str_max_length=3),
    _class(str, extra="allow"),
    _class(str, use_enum_values=True),
    Validated,
    ModelValidated,
    Serialized,
    Computed,
    PostInit,
]


def test_plain_classes_qualify_and_their_validated_instances_pass() -> None:
    event = Plain(
        name="a",
        amount=10**30,
        active=True,
        ref=uuid.uuid4(),
        day=datetime.date(1, 1, 1),
        colour=Colour.TWO,
        level=Level.HIGH,
    )
    test = exact_fields(Plain)
    assert test is not None and test(event.__dict__)
    one = exact_fields(One)
    assert one is not None and one(One(n=-1).__dict__)
    empty = exact_fields(Empty)
    assert empty is not None and empty(Empty().__dict__)


@pytest.mark.parametrize("cls", REFUSED, ids=lambda cls: repr(cls.model_fields.get("x")))
def test_classes_with_anything_of_their_own_always_take_the_round_trip(
    cls: type[Event],
) -> None:
    assert exact_fields(cls) is None


def _constructed(cls: type[Event], **values: Any) -> Event:
    return cls.model_construct(**values)


class Name(str):
    pass


WRONG: list[tuple[type[Event], dict[str, Any]]] = [
    (One, {"n": "5"}),  # a str where an int belongs: reads back as 5
    (One, {"n": True}),  # a bool where an int belongs
    (One, {"n": 1.0}),
    (One, {}),  # a missing field
    (Plain, {"name": Name("a")}),  # a str subclass
    (Plain, {"colour": "red"}),  # the value, not the member
    (Plain, {"level": 1}),
    (Plain, {"day": datetime.datetime(2024, 1, 1)}),  # a datetime is a date subclass
    (Plain, {"ref": str(uuid.uuid4())}),
    (Plain, {"note": 3}),
]

VALID_PLAIN: dict[str, Any] = {
    "name": "a",
    "amount": 1,
    "active": False,
    "ref": uuid.UUID(int=7),
    "day": datetime.date(2024, 2, 29),
    "colour": Colour.RED,
    "level": Level.LOW,
    "note": None,
}


@pytest.mark.parametrize(("cls", "values"), WRONG)
def test_values_slipped_in_without_validation_fail_the_test_and_get_the_round_trip(
    cls: type[Event], values: dict[str, Any]
) -> None:
    base = dict(VALID_PLAIN) if cls is Plain else {}
    event = _constructed(cls, **{**base, **values})
    test = exact_fields(cls)
    assert test is not None
    assert not test(event.__dict__)


def test_an_extra_attribute_fails_the_test() -> None:
    event = One(n=1)
    object.__setattr__(event, "smuggled", 2)
    test = exact_fields(One)
    assert test is not None and not test(event.__dict__)


def test_the_registry_still_refuses_what_would_read_back_changed() -> None:
    registry = EventRegistry([One, Plain])
    with warnings.catch_warnings():  # pydantic warns about the str it serializes for an int
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidEventError, match="read back"):
            registry.encode(_constructed(One, n="5"), "{}", uuid7())
        with pytest.raises(InvalidEventError, match="read back"):
            registry.encode(_constructed(Plain, **{**VALID_PLAIN, "level": 1}), "{}", uuid7())
    # A validated instance encodes to the same JSON either way.
    event = Plain(**VALID_PLAIN)
    encoded = registry.encode(event, "{}", uuid7())
    assert Plain.model_validate_json(encoded.data) == event


SAMPLES: dict[Any, list[Any]] = {
    str: ["", "a", 'é\u2028\t"\\', "\U0001f600", "x" * 1000],
    int: [0, -1, 2**63, -(10**40), 10**400],
    bool: [True, False],
    uuid.UUID: [uuid.UUID(int=0), uuid.uuid4(), uuid7()],
    datetime.date: [datetime.date(1, 1, 1), datetime.date(9999, 12, 31)],
}


def _cases() -> list[dict[str, Any]]:
    cases = []
    for name, samples in (
        ("name", SAMPLES[str]),
        ("amount", SAMPLES[int]),
        ("active", SAMPLES[bool]),
        ("ref", SAMPLES[uuid.UUID]),
        ("day", SAMPLES[datetime.date]),
        ("colour", list(Colour)),
        ("level", list(Level)),
        ("note", [None, *SAMPLES[str]]),
    ):
        cases.extend({**VALID_PLAIN, name: sample} for sample in samples)
    return cases


@pytest.mark.parametrize("values", _cases())
def test_whenever_the_test_passes_the_full_round_trip_passes_too(values: dict[str, Any]) -> None:
    """Soundness: validated or constructed, an event the test lets through is one the
    full round trip (the check the registry skips) accepts."""
    test = exact_fields(Plain)
    assert test is not None
    for event in (Plain(**values), _constructed(Plain, **values)):
        assert test(event.__dict__)
        data = Plain.__pydantic_serializer__.to_json(event, by_alias=True, round_trip=True)
        _refuse_lossy(Plain, data.decode(), event, Plain.event_type)
