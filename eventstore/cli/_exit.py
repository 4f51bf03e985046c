"""The command line's exit codes."""

from typing import Final

# 2 is argparse's exit code for bad arguments, so the checks' codes start at 3.
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_UNREACHABLE: Final = 3
EXIT_NOT_MIGRATED: Final = 4
EXIT_NOT_FOUND: Final = 5
