"""The cart: its events and the aggregate that decides on them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from eventstore import Aggregate, Event, EventRegistry, applies


class CartError(ValueError):
    """Reports a command the cart refuses (answered 422 by the API)."""


class CartOpened(Event):
    """Records a new, empty cart."""

    event_type: ClassVar[str] = "cart.Opened"
    customer: str


class ItemAdded(Event):
    """Records items put in the cart."""

    event_type: ClassVar[str] = "cart.ItemAdded"
    sku: str
    quantity: int


class ItemRemoved(Event):
    """Records every item of one SKU taken out of the cart."""

    event_type: ClassVar[str] = "cart.ItemRemoved"
    sku: str


class CheckedOut(Event):
    """Records the end of the cart: no change after this."""

    event_type: ClassVar[str] = "cart.CheckedOut"


REGISTRY = EventRegistry([CartOpened, ItemAdded, ItemRemoved, CheckedOut])


class Cart(Aggregate):
    """Holds the items of one customer's cart until checkout."""

    category: ClassVar[str] = "cart"
    customer: str = ""
    items: dict[str, int] = Field(default_factory=dict)
    checked_out: bool = False

    @applies
    def _opened(self, event: CartOpened) -> None:
        self.customer = event.customer

    @applies
    def _added(self, event: ItemAdded) -> None:
        self.items = {**self.items, event.sku: self.items.get(event.sku, 0) + event.quantity}

    @applies
    def _removed(self, event: ItemRemoved) -> None:
        self.items = {sku: n for sku, n in self.items.items() if sku != event.sku}

    @applies
    def _checked_out(self, event: CheckedOut) -> None:
        self.checked_out = True

    @property
    def item_count(self) -> int:
        """Returns how many items the cart holds, all SKUs together."""
        return sum(self.items.values())

    def open(self, customer: str) -> None:
        """Opens the cart for a customer."""
        if not customer:
            raise CartError("a cart needs a customer")
        self.record(CartOpened(customer=customer))

    def add(self, sku: str, quantity: int) -> None:
        """Puts ``quantity`` items of ``sku`` in the cart."""
        self._check_open()
        if quantity < 1:
            raise CartError("quantity must be >= 1")
        self.record(ItemAdded(sku=sku, quantity=quantity))

    def remove(self, sku: str) -> None:
        """Takes every item of ``sku`` out of the cart."""
        self._check_open()
        if sku not in self.items:
            raise CartError(f"no {sku!r} in the cart")
        self.record(ItemRemoved(sku=sku))

    def check_out(self) -> None:
        """Ends the cart."""
        self._check_open()
        if not self.items:
            raise CartError("an empty cart cannot be checked out")
        self.record(CheckedOut())

    def _check_open(self) -> None:
        if self.checked_out:
            raise CartError("the cart is checked out")
