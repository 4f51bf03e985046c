"""A bank account: the example domain of the docs, the demo and the tests.

It shows an aggregate with typed handlers, commands that validate before recording, an
event that changed shape twice (``bank.MoneyDeposited`` v1 -> v3 through upcasters) and a
renamed class that keeps its stored type name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventstore import Aggregate, Event, EventRegistry, applies

__all__ = [
    "Account",
    "AccountClosed",
    "AccountIsClosed",
    "AccountOpened",
    "InsufficientFunds",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "registry",
]


class AccountOpened(Event):
    event_type: ClassVar[str] = "bank.AccountOpened"
    owner: str
    currency: str = "EUR"


class MoneyDeposited(Event):
    """Version 3: v1 stored ``cents``, v2 renamed it ``amount``, v3 added ``reference``."""

    event_type: ClassVar[str] = "bank.MoneyDeposited"
    schema_version: ClassVar[int] = 3
    amount: int
    reference: str = ""


class MoneyWithdrawn(Event):
    event_type: ClassVar[str] = "bank.MoneyWithdrawn"
    amount: int


class AccountClosed(Event):
    # The class was called `AccountTerminated` once; the stored name never changed.
    event_type: ClassVar[str] = "bank.AccountClosed"


class InsufficientFunds(Exception):
    """Refuses a withdrawal larger than the balance."""


class AccountIsClosed(Exception):
    """Refuses any command on a closed account."""


class Account(Aggregate):
    """Holds an account's balance; every change is an event."""

    category: ClassVar[str] = "account"
    snapshot_version: ClassVar[int] = 1

    owner: str = ""
    balance: int = 0
    closed: bool = False

    @applies
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner

    @applies
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount

    @applies
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount

    @applies
    def _closed(self, event: AccountClosed) -> None:
        self.closed = True

    def open(self, owner: str) -> None:
        if self.version or self.pending_events:
            raise ValueError(f"account {self.id} is already open")
        self.record(AccountOpened(owner=owner))

    def deposit(self, amount: int, reference: str = "") -> None:
        self._check_open(amount)
        self.record(MoneyDeposited(amount=amount, reference=reference))

    def withdraw(self, amount: int) -> None:
        self._check_open(amount)
        if amount > self.balance:
            raise InsufficientFunds(f"balance {self.balance} < {amount}")
        self.record(MoneyWithdrawn(amount=amount))

    def close(self) -> None:
        self._check_open(0)
        self.record(AccountClosed())

    def _check_open(self, amount: int) -> None:
        if self.closed:
            raise AccountIsClosed(self.id)
        if amount < 0:
            raise ValueError("amounts are positive")


def _deposited_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in data.items() if k != "cents"}
    return {"amount": data["cents"], **rest}


def _deposited_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {"reference": "", **data}


registry = EventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed])
registry.add_upcaster("bank.MoneyDeposited", 1, _deposited_v1_to_v2)
registry.add_upcaster("bank.MoneyDeposited", 2, _deposited_v2_to_v3)
