"""Alembic revisions of the StopHub schema."""
