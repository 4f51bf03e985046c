"""The README's example runs as written (against a fresh database)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs(eventstore_database_url: str) -> None:
    # The twenty lines, then the read model of their events: one namespace, in order.
    store, read_model = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in (store, read_model):
        code = block.replace("postgresql://localhost/app", eventstore_database_url)
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["balance"] == 15
    assert namespace["projected"] == (15,)
