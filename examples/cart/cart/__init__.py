"""An example service: shopping carts as event-sourced aggregates behind a FastAPI API."""
