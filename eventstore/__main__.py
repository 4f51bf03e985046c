"""Runs the ``eventstore`` command line with ``python -m eventstore``."""

from eventstore.cli import main

raise SystemExit(main())
