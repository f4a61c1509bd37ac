"""QIDO-RS query parameters (PS3.18 8.3.4): matching by keyword or tag, wild cards,
UID lists, date ranges, ModalitiesInStudy, fuzzy matching of the pseudonym,
includefield, paging, 400 for what is not DICOM, Warning 299 for what is ignored."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.imaging import quality
from cases.imaging.models import (
    AcquisitionProfile,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
)
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.services import ingest_enqueue
from cases.imaging.staging import stage_chunks
from cases.models import Case

pytestmark = pytest.mark.django_db

STUDIES = "/dicomweb/studies"


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def make_study(case, *, date, description, modalities, series_rows=None):
    study = ImagingStudy.objects.create(
        case=case,
        study_uid=_uid(),
        modality=modalities[0],
        study_date=date,
        description=description,
        series_count=len(modalities),
        status=ImagingStudy.Status.ACCEPTED,
        source=ImagingStudy.Source.UPLOAD,
    )
    for number, modality in enumerate(modalities, 1):
        ImagingSeries.objects.create(
            study=study,
            series_uid=_uid(),
            series_number=number,
            modality=modality,
            description=f"{modality} series {number}",
            instance_count=10 * number,
            slice_thickness=0.625,
            rows=series_rows,
            columns=series_rows,
            pixel_spacing=[0.4, 0.4],
            kernel="BONE" if modality == "CT" else "",
        )
    return study


@pytest.fixture
def catalogue(case_at):
    """Four studies of two synthetic patients, by name."""
    first = case_at(Case.Status.SUBMITTED)
    second = case_at(Case.Status.SUBMITTED)
    return {
        "head": make_study(
            first,
            date=datetime.date(2024, 1, 10),
            description="HEAD CT BONE",
            modalities=["CT"],
            series_rows=512,
        ),
        "head_again": make_study(
            first,
            date=datetime.date(2024, 1, 31),
            description="HEAD CT SOFT",
            modalities=["CT", "SR"],
        ),
        "pelvis": make_study(
            second,
            date=datetime.date(2024, 2, 1),
            description="PELVIS MR",
            modalities=["MR"],
        ),
        "undated": make_study(
            second, date=None, description="Jaw CBCT", modalities=["CT"]
        ),
    }


@pytest.fixture
def qido(client, designer):
    client.force_login(designer)

    def get(path=STUDIES, **params):
        return client.get(path, params)

    return get


def found(answer, catalogue) -> set[str]:
    """The names of the studies an answer lists."""
    assert answer.status_code == 200, answer.content
    by_uid = {s.study_uid: name for name, s in catalogue.items()}
    return {by_uid[d["0020000D"]["Value"][0]] for d in answer.json()}


def warning_of(answer) -> str:
    return answer.headers.get("Warning", "")


# --- matching ----------------------------------------------------------------------


def test_no_key_lists_every_visible_study(qido, catalogue):
    assert found(qido(), catalogue) == set(catalogue)


def test_keyword_and_tag_name_the_same_attribute(qido, catalogue):
    head = catalogue["head"].study_uid
    assert found(qido(StudyInstanceUID=head), catalogue) == {"head"}
    assert found(qido(**{"0020000D": head}), catalogue) == {"head"}
    assert found(qido(**{"0020000d": head}), catalogue) == {"head"}


def test_uid_list_matching(qido, catalogue):
    uids = [catalogue["head"].study_uid, catalogue["pelvis"].study_uid]
    assert found(qido(StudyInstanceUID=",".join(uids)), catalogue) == {
        "head",
        "pelvis",
    }
    assert found(qido(StudyInstanceUID="\\".join(uids)), catalogue) == {
        "head",
        "pelvis",
    }
    assert found(qido(StudyInstanceUID=uids), catalogue) == {"head", "pelvis"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HEAD*", {"head", "head_again"}),
        ("*BONE", {"head"}),
        ("HEAD CT ?O??", {"head", "head_again"}),
        ("HEAD CT ?ONE", {"head"}),
        ("*", {"head", "head_again", "pelvis", "undated"}),
        ("", {"head", "head_again", "pelvis", "undated"}),
        ("head*", set()),  # literal matching is case-sensitive (PS3.4 C.2.2.2.1)
        ("HEAD", set()),  # single value matching is the whole value
        ("HEAD CT BONE", {"head"}),
        ("PELVIS.MR", set()),  # only * and ? are wild
        ("P**********************************************X", set()),
        ("***HEAD***", {"head", "head_again"}),
    ],
)
def test_wildcard_matching_on_strings(qido, catalogue, value, expected):
    assert found(qido(StudyDescription=value), catalogue) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240110", {"head"}),
        ("20240101-20240131", {"head", "head_again"}),
        ("20240111-20240201", {"head_again", "pelvis"}),
        ("-20240131", {"head", "head_again"}),
        ("20240131-", {"head_again", "pelvis"}),
        ("20240301-", set()),
    ],
)
def test_date_range_matching(qido, catalogue, value, expected):
    assert found(qido(StudyDate=value), catalogue) == expected


def test_modalities_in_study_matches_any_series(qido, catalogue):
    assert found(qido(ModalitiesInStudy="CT"), catalogue) == {
        "head",
        "head_again",
        "undated",
    }
    assert found(qido(ModalitiesInStudy="SR"), catalogue) == {"head_again"}
    assert found(qido(ModalitiesInStudy="MR,SR"), catalogue) == {
        "head_again",
        "pelvis",
    }
    assert found(qido(ModalitiesInStudy="M?"), catalogue) == {"pelvis"}
    answer = qido(ModalitiesInStudy="SR")
    (dataset,) = answer.json()
    assert dataset["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}


def test_accession_number_is_the_case_reference(qido, catalogue):
    reference = catalogue["pelvis"].case.reference
    assert found(qido(AccessionNumber=reference), catalogue) == {"pelvis", "undated"}
    wild = reference[:-1] + "?"
    assert found(qido(AccessionNumber=wild), catalogue) == {
        name
        for name, study in catalogue.items()
        if study.case.reference[:-1] == reference[:-1]
    }


def test_patient_id_matches_the_pseudonym_literally(qido, catalogue):
    pseudonym = catalogue["head"].case.patient.pseudonym
    assert found(qido(PatientID=pseudonym), catalogue) == {"head", "head_again"}
    assert found(qido(PatientID=pseudonym.lower()), catalogue) == set()


def with_a_word_starting(catalogue, prefix: str) -> set[str]:
    """The studies whose pseudonym (PSI-XXXX-XXXX) has a word starting ``prefix``."""
    return {
        name
        for name, study in catalogue.items()
        if any(
            word.startswith(prefix.upper())
            for word in study.case.patient.pseudonym.split("-")
        )
    }


def test_fuzzy_matching_of_the_pseudonym(qido, catalogue):
    pseudonym = catalogue["pelvis"].case.patient.pseudonym
    _, middle, last = pseudonym.split("-")
    cases = {
        last.lower(): {"pelvis", "undated"},
        last[:3].lower(): with_a_word_starting(catalogue, last[:3]),
        # Accents and case are folded: the name starts "PSI-<middle>".
        "ṔSÍ-" + middle.lower(): {"pelvis", "undated"},
        # A word matches from its start only.
        last[1:].lower(): with_a_word_starting(catalogue, last[1:]),
    }
    for value, expected in cases.items():
        fuzzy = qido(PatientName=value, fuzzymatching="true")
        assert found(fuzzy, catalogue) == expected, value
        # Literal matching finds none of them.
        assert found(qido(PatientName=value), catalogue) == set(), value
    assert "pelvis" in cases[last[:3].lower()]
    assert found(qido(PatientName=pseudonym), catalogue) == {"pelvis", "undated"}


def test_matching_keys_combine(qido, catalogue):
    assert found(
        qido(ModalitiesInStudy="CT", StudyDate="20240101-20240115"), catalogue
    ) == {"head"}


# --- what is returned ---------------------------------------------------------------


def test_default_study_attributes(qido, catalogue):
    (dataset,) = qido(StudyInstanceUID=catalogue["head"].study_uid).json()
    assert list(dataset) == sorted(dataset)
    assert dataset["00080020"] == {"vr": "DA", "Value": ["20240110"]}
    assert dataset["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert dataset["00081030"] == {"vr": "LO", "Value": ["HEAD CT BONE"]}
    pseudonym = catalogue["head"].case.patient.pseudonym
    assert dataset["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": pseudonym}]}
    assert dataset["00201206"] == {"vr": "IS", "Value": [1]}
    assert dataset["00081190"]["Value"][0].endswith(
        f"/dicomweb/studies/{catalogue['head'].study_uid}"
    )


def series_path(study) -> str:
    return f"{STUDIES}/{study.study_uid}/series"


def test_series_extras_come_with_includefield(qido, catalogue):
    path = series_path(catalogue["head"])
    (plain,) = qido(path).json()
    assert "00180050" not in plain and "00280010" not in plain
    assert plain["0020000D"]["Value"] == [catalogue["head"].study_uid]
    assert plain["00081190"]["Value"][0].endswith(
        f"/series/{plain['0020000E']['Value'][0]}"
    )
    (asked,) = qido(
        path, includefield=["SliceThickness,00280010", "PixelSpacing"]
    ).json()
    assert asked["00180050"] == {"vr": "DS", "Value": [0.625]}
    assert asked["00280010"] == {"vr": "US", "Value": [512]}
    assert asked["00280030"] == {"vr": "DS", "Value": [0.4, 0.4]}
    assert "00280011" not in asked
    (everything,) = qido(path, includefield="all").json()
    assert everything["00181210"] == {"vr": "SH", "Value": ["BONE"]}
    assert everything["00280011"] == {"vr": "US", "Value": [512]}


def test_includefield_of_what_is_not_held_is_a_warning(qido, catalogue):
    answer = qido(includefield="StudyTime,ReferringPhysicianName")
    assert answer.status_code == 200
    assert warning_of(answer).startswith('299 psi "')
    assert "StudyTime" in warning_of(answer)
    assert "ReferringPhysicianName" in warning_of(answer)
    assert "00080030" not in answer.json()[0]


def test_series_matching(qido, catalogue):
    path = series_path(catalogue["head_again"])
    (sr,) = qido(path, Modality="SR").json()
    assert sr["00200011"] == {"vr": "IS", "Value": [2]}
    assert len(qido(path, SeriesNumber="1").json()) == 1
    assert qido(path, SeriesNumber="one").status_code == 400
    assert qido(path, SeriesDescription="CT*").json()[0]["00080060"]["Value"] == ["CT"]


# --- refused and ignored ------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"Foo": "1"}, "Foo is neither a DICOM keyword nor a tag"),
        ({"12345678": "1"}, "not a DICOM attribute tag"),
        ({"StudyDate": "2024"}, "StudyDate is a date"),
        ({"StudyDate": "20240230"}, "does not exist"),
        ({"StudyDate": "20240201-20240101"}, "ends before it starts"),
        ({"StudyDate": "-"}, "StudyDate is a date"),
        ({"StudyInstanceUID": "1.2.abc"}, "takes UIDs"),
        ({"limit": "-1"}, "limit is a whole number"),
        ({"offset": "x"}, "offset is a whole number"),
        ({"fuzzymatching": "yes"}, "fuzzymatching is true or false"),
        ({"includefield": "all,StudyDate"}, "cannot be combined"),
        ({"includefield": "NotAThing"}, "NotAThing is neither"),
        ({"StudyDescription": ["A", "B"]}, "StudyDescription may be given once"),
        ({"StudyDescription": "A" * 257}, "longer than 256"),
        ({"StudyDate": "20240101", "00080020": "20240101"}, "may be given once"),
        ({"Limit": "5"}, "Limit is neither"),
    ],
)
def test_malformed_query_is_400_with_the_reason(qido, catalogue, params, reason):
    answer = qido(**params)
    assert answer.status_code == 400
    assert reason in answer.content.decode()


def test_valid_but_unsupported_keys_are_ignored_with_a_warning(qido, catalogue):
    answer = qido(
        StudyTime="101500",
        ReferringPhysicianName="X*",
        Modality="MR",
        **{"00091001": "private"},
    )
    assert found(answer, catalogue) == set(catalogue)
    text = warning_of(answer)
    assert text.startswith('299 psi "')
    for name in ("StudyTime", "ReferringPhysicianName", "Modality", "00091001"):
        assert name in text
    # The values are never echoed.
    assert "X*" not in text and "101500" not in text


def test_unsupported_matching_parameters_are_a_warning(qido, catalogue):
    answer = qido(emptyvaluematching="true")
    assert answer.status_code == 200
    assert "emptyvaluematching" in warning_of(answer)
    assert "Warning" not in qido(emptyvaluematching="false").headers


# --- paging -------------------------------------------------------------------------


def test_limit_and_offset_page_in_a_stable_order(qido, catalogue):
    every = [d["0020000D"]["Value"][0] for d in qido().json()]
    first = qido(limit="3")
    assert [d["0020000D"]["Value"][0] for d in first.json()] == every[:3]
    assert "There are 1 additional results" in warning_of(first)
    rest = qido(limit="3", offset="3")
    assert [d["0020000D"]["Value"][0] for d in rest.json()] == every[3:]
    assert "Warning" not in rest.headers


def test_no_match_is_an_empty_list(qido, catalogue):
    answer = qido(StudyDescription="NOTHING")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("application/dicom+json")
    assert answer.json() == []
    assert qido(offset="10").json() == []


def test_outsider_finds_nothing(client, outsider, catalogue):
    client.force_login(outsider)
    assert client.get(STUDIES).json() == []
    path = series_path(catalogue["head"])
    assert client.get(path).json() == []


# --- instances ----------------------------------------------------------------------


@pytest.fixture
def ingested(case_at, surgeon, tmp_path, settings, django_capture_on_commit_callbacks):
    settings.PSI_STAGING_DIR = tmp_path / "staging"
    limits = quality.default_profile("cranial").as_dict()
    AcquisitionProfile.objects.get_or_create(region="cranial", limits=limits)
    case = case_at(Case.Status.SUBMITTED)
    paths = write_series(tmp_path / "s", PhantomSpec(slices=4, rows=32, columns=32))
    staged = [str(stage_chunks(case.pk, [Path(p).read_bytes()])) for p in paths]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_enqueue(actor=surgeon, case=case, paths=staged, source="upload")
    return ImagingStudy.objects.get(case=case)


def test_instance_search(qido, ingested):
    series = ingested.series.get()
    path = f"{series_path(ingested)}/{series.series_uid}/instances"
    listed = qido(path).json()
    assert len(listed) == 4
    assert "00083002" not in listed[0]
    numbers = [d["00200013"]["Value"][0] for d in listed]
    (third,) = qido(path, InstanceNumber=str(numbers[2])).json()
    assert third["00080018"] == listed[2]["00080018"]
    uid = listed[0]["00080018"]["Value"][0]
    (one,) = qido(
        path, SOPInstanceUID=uid, includefield="AvailableTransferSyntaxUID"
    ).json()
    instance = ImagingInstance.objects.get(sop_instance_uid=uid)
    assert one["00083002"] == {"vr": "UI", "Value": [instance.transfer_syntax_uid]}
    assert one["00081190"]["Value"][0].endswith(f"/instances/{uid}")
    page = qido(path, limit="1", offset="1")
    assert [d["00080018"] for d in page.json()] == [listed[1]["00080018"]]
    assert "There are 2 additional results" in warning_of(page)


def test_query_count_does_not_grow_with_the_page(qido, catalogue):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert qido(includefield="all").status_code == 200
        return len(queries)

    before = count()
    case = catalogue["head"].case
    for day in range(1, 6):
        make_study(
            case,
            date=datetime.date(2024, 3, day),
            description="MORE",
            modalities=["CT", "MR"],
        )
    assert count() == before
