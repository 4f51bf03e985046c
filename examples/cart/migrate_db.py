"""Runs the carts' migrations and the event store's: ``DATABASE_URL=... python migrate_db.py``."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

import eventstore.migrate

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """Returns the alembic config of this tree, with the event store's revisions in it."""
    config = Config(str(HERE / "alembic.ini"))
    # One folder per line (path_separator = newline); "%" must be doubled in config values.
    folders = [HERE / "alembic" / "versions", eventstore.migrate.versions_dir()]
    config.set_main_option(
        "version_locations", "\n".join(str(f).replace("%", "%%") for f in folders)
    )
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    """Upgrades both branches (the carts' and the event store's) to their heads."""
    command.upgrade(alembic_config(database_url), "heads")


if __name__ == "__main__":
    upgrade(os.environ["DATABASE_URL"])
