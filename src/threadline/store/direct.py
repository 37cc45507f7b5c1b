"""The run path's statements, run straight on SQLite's driver: ``execute(conn, stmt, params)``.

SQLAlchemy compiles a statement once and caches it, but each execution still builds its cache key,
an execution context and a result object around the driver's cursor: on SQLite that costs several
times the statement itself, and a run makes about twenty. Here a statement built once (a module
constant) is compiled once per set of parameter names into its SQL text, the order of its
parameters and the type conversions SQLAlchemy would apply (JSON in and out, for instance); each
execution is then the driver's own ``execute`` or ``executemany`` and those conversions.

The answer has the part of SQLAlchemy's result the stores use (``rowcount``, ``first``, ``all``;
rows that are tuples with ``_fields`` and ``_mapping``), and the driver's
errors are raised as SQLAlchemy's, so callers and ``Database`` treat both paths alike. On
PostgreSQL, and for a statement this cannot take as it is (expanding or literal parameters),
``execute`` is ``conn.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Executable

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class _Row(tuple[Any, ...]):
    """A result row: a tuple with the column keys, as SQLAlchemy's ``Row`` has them."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


@dataclass(frozen=True, slots=True)
class _Plan:
    statement: Executable  # kept, so the id it is found by is not reused
    sql: str
    given: tuple[tuple[str, Any], ...]
    """Per parameter in order: its name, and the value the statement holds itself (taken when the
    caller gives none)."""
    converted: tuple[tuple[int, Callable[[Any], Any]], ...]
    """The parameters SQLAlchemy's type converts on the way in (JSON, say), by position."""
    row: type[_Row] | None
    results: tuple[Callable[[Any], Any] | None, ...] | None
    """Per result column, SQLAlchemy's conversion on the way out; ``None`` when no column has one."""


_PLANS: dict[tuple[int, tuple[str, ...], bool], _Plan | None] = {}


class Outcome:
    """What a statement run here gave: its rows (if it returns any) and how many rows it changed."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[_Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> _Row | None:
        return self._rows[0] if self._rows else None

    def all(self) -> list[_Row]:
        return self._rows


def execute(conn: Connection, stmt: Executable, params: Params = None) -> Any:
    """``conn.execute(stmt, params)``, straight on the driver when ``conn`` is SQLite's."""
    if conn.dialect.name != "sqlite":
        return conn.execute(stmt, params)
    many = isinstance(params, Sequence)
    rows: Sequence[Mapping[str, Any]] = params if many else [params or {}]  # type: ignore[list-item,assignment]
    if not rows:
        return conn.execute(stmt, params)
    keys = tuple(sorted(rows[0]))
    plan = _plan(conn, stmt, keys, many and len(rows) > 1)
    if plan is None:
        return conn.execute(stmt, params)
    values = [_values(plan, row) for row in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if len(values) > 1:
            cursor.executemany(plan.sql, values)
        else:
            cursor.execute(plan.sql, values[0])
        found = cursor.fetchall() if plan.row is not None else []
        rowcount = cursor.rowcount
    except conn.dialect.loaded_dbapi.Error as error:
        raise sa_exc.DBAPIError.instance(
            plan.sql, values, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from error
    finally:
        cursor.close()
    if plan.row is None:
        return Outcome([], rowcount)
    made = plan.row
    results = plan.results
    if results is not None:
        found = [[v if f is None else f(v) for f, v in zip(results, row, strict=True)] for row in found]
    return Outcome([made(row) for row in found], rowcount)


def _values(plan: _Plan, row: Mapping[str, Any]) -> list[Any]:
    values = [row.get(name, fixed) for name, fixed in plan.given]
    for position, bind in plan.converted:
        values[position] = bind(values[position])
    return values


def _plan(conn: Connection, stmt: Executable, keys: tuple[str, ...], many: bool) -> _Plan | None:
    """``stmt`` compiled for these parameter names, as SQLAlchemy's own execution would compile it;
    ``None`` when it needs more than a fixed text (it then goes through SQLAlchemy)."""
    key = (id(stmt), keys, many)
    if key in _PLANS:
        return _PLANS[key]
    compiled: Any = cast(Any, stmt).compile(
        dialect=conn.dialect, column_keys=list(keys), for_executemany=many
    )
    plan: _Plan | None = None
    simple = (
        compiled.positional
        and not compiled.escaped_bind_names
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and not any(b.expanding for b in compiled.binds.values())
    )
    if simple:
        names = tuple(compiled.positiontup)
        defaults = compiled.construct_params(_check=False)
        processors = compiled._bind_processors
        columns = compiled._result_columns
        row = type("Row", (_Row,), {"__slots__": (), "_fields": tuple(c[0] for c in columns)})
        results = tuple(c[3]._cached_result_processor(conn.dialect, None) for c in columns)
        plan = _Plan(
            statement=stmt,
            sql=compiled.string,
            given=tuple((name, defaults.get(name)) for name in names),
            converted=tuple(
                (position, processors[name]) for position, name in enumerate(names) if processors.get(name)
            ),
            row=row if columns else None,
            results=results if any(results) else None,
        )
    _PLANS[key] = plan
    return plan
