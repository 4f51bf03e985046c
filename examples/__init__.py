"""Example domains used by the docs, the demo and the tests."""
