"""``psi.bulk.bulk_insert``: the rows and history rows of ``bulk_create_with_history``,
written with COPY on PostgreSQL."""

import pytest
from django.db import connection, transaction
from simple_history.utils import bulk_create_with_history

from cases.imaging.models import (
    ImagingIdentityLink,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
)
from psi.bulk import bulk_insert
from psi.models import SigningGuard, StoredFile

from .conftest import on_postgresql

pytestmark = pytest.mark.django_db

#: Columns that differ between two inserts of the same values.
NOISE = {"id", "history_id", "history_date", "created_at"}


def _files(tag: str, *, creator=None) -> list[StoredFile]:
    return [
        StoredFile(
            sha256=f"{i:064x}",
            size=1000 + i,
            content_type="application/dicom",
            storage_name=f"{tag}/{i}",
            created_by=creator,
        )
        for i in range(3)
    ]


def _rows(model, objs, *, unique=()) -> list[dict]:
    pks = [obj.pk for obj in objs]
    rows = model.objects.filter(pk__in=pks).order_by("pk").values()
    return [
        {k: v for k, v in row.items() if k not in NOISE | set(unique)} for row in rows
    ]


def _history(model, objs, *, unique=()) -> list[dict]:
    pks = [obj.pk for obj in objs]
    rows = model.history.filter(id__in=pks).order_by("id").values()
    return [
        {k: v for k, v in row.items() if k not in NOISE | set(unique)} for row in rows
    ]


@pytest.fixture
def study(make_case):
    return ImagingStudy.objects.create(
        case=make_case(),
        study_uid="2.25.100",
        modality="CT",
        source=ImagingStudy.Source.CSTORE,
    )


def test_rows_get_primary_keys_and_a_history_row_each(surgeon):
    files = bulk_insert(_files("a"), StoredFile, history_user=surgeon)

    assert all(f.pk and not f._state.adding for f in files)
    assert StoredFile.objects.filter(pk__in=[f.pk for f in files]).count() == 3
    history = StoredFile.history.filter(id__in=[f.pk for f in files])
    assert sorted(h.history_type for h in history) == ["+", "+", "+"]
    assert {h.history_user_id for h in history} == {surgeon.pk}


def test_an_instance_own_history_user_wins(surgeon, case_manager):
    files = _files("b")
    files[0]._history_user = case_manager

    bulk_insert(files, StoredFile, history_user=surgeon)

    users = dict(
        StoredFile.history.filter(id__in=[f.pk for f in files]).values_list(
            "id", "history_user_id"
        )
    )
    assert users == {
        files[0].pk: case_manager.pk,
        files[1].pk: surgeon.pk,
        files[2].pk: surgeon.pk,
    }


def test_a_model_without_history_gets_its_rows_only(surgeon, case_manager):
    guards = bulk_insert(
        [SigningGuard(user=surgeon), SigningGuard(user=case_manager)], SigningGuard
    )

    assert all(g.pk for g in guards)
    assert set(SigningGuard.objects.values_list("user_id", flat=True)) == {
        surgeon.pk,
        case_manager.pk,
    }


def test_saved_rows_are_refused(surgeon):
    (saved,) = bulk_insert(_files("c")[:1], StoredFile)

    with pytest.raises(ValueError, match="new rows only"):
        bulk_insert([saved], StoredFile)


@on_postgresql
def test_copy_writes_what_bulk_create_with_history_writes(study, surgeon):
    series = ImagingSeries.objects.create(
        study=study, series_uid="2.25.101", orientation=[1, 0, 0, 0, 1, 0]
    )

    def instances(tag: str, files: list[StoredFile]) -> list[ImagingInstance]:
        return [
            ImagingInstance(
                case=study.case,
                study=study,
                series=series,
                sop_instance_uid=f"2.25.{tag}{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                original_uid_hmac=f"{tag}{i}",
                file=file,  # saved by the insert before: its key is taken
                instance_number=i,
                position=None if i == 0 else -12.5 * i,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                header={"rows": 512, "position": [0.0, 1.5, -12.5 * i]},
            )
            for i, file in enumerate(files)
        ]

    def links(tag: str) -> list[ImagingIdentityLink]:
        return [
            ImagingIdentityLink(
                study=study,
                kind="instance",
                deidentified=f"2.25.{tag}{i}",
                original=f"1.2.3.original.{i}",
            )
            for i in range(3)
        ]

    with transaction.atomic():
        copied = bulk_insert(
            _files("x", creator=surgeon), StoredFile, history_user=surgeon
        )
        made = bulk_create_with_history(
            _files("y", creator=surgeon), StoredFile, default_user=surgeon
        )
        copied_instances = bulk_insert(instances("1", copied), ImagingInstance)
        made_instances = bulk_create_with_history(instances("2", made), ImagingInstance)
        copied_links = bulk_insert(
            links("1"), ImagingIdentityLink, history_user=surgeon
        )
        made_links = bulk_create_with_history(
            links("2"), ImagingIdentityLink, default_user=surgeon
        )

    assert connection.vendor == "postgresql"
    assert _rows(StoredFile, copied, unique={"storage_name"}) == _rows(
        StoredFile, made, unique={"storage_name"}
    )
    assert _history(StoredFile, copied, unique={"storage_name"}) == _history(
        StoredFile, made, unique={"storage_name"}
    )
    instance_unique = {"sop_instance_uid", "original_uid_hmac", "file_id"}
    assert _rows(ImagingInstance, copied_instances, unique=instance_unique) == _rows(
        ImagingInstance, made_instances, unique=instance_unique
    )
    assert _history(
        ImagingInstance, copied_instances, unique=instance_unique
    ) == _history(ImagingInstance, made_instances, unique=instance_unique)
    assert [i.file_id for i in copied_instances] == [f.pk for f in copied]
    # The original is encrypted in the row and in its history, and reads back.
    assert _rows(ImagingIdentityLink, copied_links, unique={"deidentified"}) == _rows(
        ImagingIdentityLink, made_links, unique={"deidentified"}
    )
    assert _history(
        ImagingIdentityLink, copied_links, unique={"deidentified"}
    ) == _history(ImagingIdentityLink, made_links, unique={"deidentified"})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT original FROM cases_imagingidentitylink WHERE id = %s",
            [copied_links[0].pk],
        )
        (stored,) = cursor.fetchone()
    assert "original" not in stored
