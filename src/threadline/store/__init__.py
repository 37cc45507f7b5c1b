"""Storage: the only package that imports SQLAlchemy. SQLite (WAL) by default, PostgreSQL for scale-out."""

from threadline.store.database import Database
from threadline.store.repository import SqlStore

__all__ = ["Database", "SqlStore"]
