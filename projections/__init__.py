"""projections: arrives with its own issue; nothing is public yet."""

__all__: list[str] = []
