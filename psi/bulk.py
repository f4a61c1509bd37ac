"""New rows by the hundred, with their history rows, in one COPY per table.

An ingest records a few rows per received object (the stored file, the instance, the
identity link) and a history row for each: about six rows a CT slice. Django's
``bulk_create`` and django-simple-history's ``bulk_create_with_history`` build a
historical model instance per row and an INSERT whose every value psycopg quotes in
Python; that cost a CT slice more CPU than parsing its header. :func:`bulk_insert`
writes the same rows with PostgreSQL's ``COPY FROM STDIN`` instead: primary keys are
taken from the table's sequence first (so related rows can name them, as after
``bulk_create``), each value is prepared by its field as Django would prepare it
(``pre_save``, ``get_db_prep_save``: ``auto_now_add``, encryption, JSON), and the
history rows are the same values again with the history columns in front.

Elsewhere (SQLite), or for a model this does not know how to copy (database defaults,
history models with extra fields), it is ``bulk_create_with_history`` itself (plain
``bulk_create`` for a model without history); the tests compare what both write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, get_change_reason_from_object

M = TypeVar("M", bound=models.Model)

#: The columns a historical model adds to the ones it tracks.
_HISTORY_COLUMNS = (
    "history_id",
    "history_date",
    "history_change_reason",
    "history_type",
    "history_user_id",
)


def bulk_insert(objs: Sequence[M], model: type[M], *, history_user=None) -> Sequence[M]:
    """Insert ``objs`` (new instances of ``model``) and a "+" history row for each,
    in the caller's transaction; return them with their primary keys set.

    ``history_user`` is what ``bulk_create_with_history`` calls ``default_user``: the
    user of each history row unless the instance carries its own ``_history_user``.
    As with ``bulk_create``, no signals are sent.
    """
    if not objs:
        return objs
    if any(obj.pk is not None for obj in objs):
        raise ValueError("bulk_insert takes new rows only (a primary key is set)")
    alias = router.db_for_write(model)
    connection = connections[alias]
    history = _history_model(model)
    if connection.vendor != "postgresql" or not _copyable(model, history):
        if history is None:
            return model._default_manager.bulk_create(objs)
        return bulk_create_with_history(objs, model, default_user=history_user)
    with transaction.atomic(using=alias, savepoint=False):
        fields, rows = _insert_rows(connection, model, objs)
        for obj in objs:
            obj._state.adding = False
            obj._state.db = alias
        if history is not None and getattr(settings, "SIMPLE_HISTORY_ENABLED", True):
            _insert_history(connection, history, objs, fields, rows, history_user)
    return objs


def _history_model(model: type[models.Model]) -> type[models.Model] | None:
    """The model's historical model, without building its manager (simple_history
    makes a new manager class on every access of ``Model.history``)."""
    attribute = getattr(model._meta, "simple_history_manager_attribute", None)
    descriptor = model.__dict__.get(attribute) if attribute else None
    return getattr(descriptor, "model", None)


def _copyable(model: type[models.Model], history) -> bool:
    pk = model._meta.pk
    if not isinstance(
        pk, models.AutoField | models.BigAutoField | models.SmallAutoField
    ):
        return False
    if any(field.has_db_default() for field in model._meta.concrete_fields):
        return False
    if history is None:
        return True
    tracked = {field.attname for field in history.tracked_fields}
    own = {field.attname for field in history._meta.concrete_fields}
    expected = tracked | set(_HISTORY_COLUMNS)
    return not hasattr(history, "history_relation") and own == expected


def _insert_rows(connection, model, objs) -> tuple[list, list[list]]:
    meta = model._meta
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_insert")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) "
            "FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(objs)],
        )
        for obj, (pk,) in zip(objs, cursor.fetchall(), strict=True):
            obj.pk = pk
    fields = list(meta.concrete_fields)
    rows = [
        [
            field.get_db_prep_save(field.pre_save(obj, True), connection)
            for field in fields
        ]
        for obj in objs
    ]
    _copy(connection, meta.db_table, [field.column for field in fields], rows)
    return fields, rows


def _insert_history(connection, history, objs, fields, rows, history_user) -> None:
    tracked = {field.attname for field in history.tracked_fields}
    keep = [i for i, field in enumerate(fields) if field.attname in tracked]
    columns = [
        "history_date",
        "history_change_reason",
        "history_type",
        history._meta.get_field("history_user").column,
    ] + [fields[i].column for i in keep]
    now = timezone.now()
    history_rows = []
    for obj, row in zip(objs, rows, strict=True):
        user = getattr(
            obj,
            "_history_user",
            history_user or history.get_default_history_user(obj),
        )
        history_rows.append(
            [
                getattr(obj, "_history_date", now),
                get_change_reason_from_object(obj) or None,
                "+",
                getattr(user, "pk", user),
            ]
            + [row[i] for i in keep]
        )
    _copy(connection, history._meta.db_table, columns, history_rows)


def _copy(connection, table: str, columns: list[str], rows: list[list]) -> None:
    quote = connection.ops.quote_name
    statement = (
        f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    )
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
