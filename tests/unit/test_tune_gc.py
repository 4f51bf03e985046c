"""The daemons' collector settings (`tune_gc`), in a process of their own."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc
from eventstore.subscriptions.runner import DAEMON_GC_THRESHOLDS, tune_gc
assert gc.get_threshold() != DAEMON_GC_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() == 0
tune_gc()
assert gc.get_threshold() == DAEMON_GC_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()  # what was loaded at start

class Node:
    pass

# A cycle of garbage made after the start is still reclaimed by a full collection.
node = Node()
node.me = node
del node
assert gc.collect() >= 1
print("ok")
"""


def test_tune_gc_freezes_what_was_loaded_and_raises_the_thresholds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
