"""The pinned Table E.1-1 and how its codes are compiled."""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib import resources

import pytest
from pydicom.sr.codedict import codes

from cases.imaging.deid import CID_7050, DEFAULT_OPTIONS, load_table, table_edition
from cases.imaging.deid.table import (
    PINNED_TABLES,
    TableIntegrityError,
    compile_profile,
    parse_table,
    resolve_basic,
)


def row(tag: int):
    return next(r for r in load_table().rows if r.tag == tag)


def test_the_pinned_table_is_the_one_regulatory_names():
    table = load_table()

    assert table.sha256 == (
        "a99a35d1278e2bace8d90ff791b11aea2d45f1e3e1230388eb5224c9dbcd29e6"
    )
    assert table_edition() == "2024b"
    assert len(table.rows) == 621
    assert Counter(r.basic for r in table.rows) == {
        "X": 384,
        "D": 92,
        "U": 54,
        "Z": 42,
        "X/D": 22,
        "X/Z": 11,
        "X/Z/D": 8,
        "Z/D": 6,
        "X/Z/U*": 2,
    }
    licence = resources.files("cases.imaging").joinpath("ps315_table_e11.LICENSE.txt")
    assert "MIT" in licence.read_text() and "Innolitics" in licence.read_text()


def test_a_changed_table_is_refused():
    data = (
        resources.files("cases.imaging").joinpath("ps315_table_e11.json").read_bytes()
    )
    tampered = data.replace(b'"basicProfile":"X"', b'"basicProfile":"K"', 1)
    assert hashlib.sha256(tampered).hexdigest() not in PINNED_TABLES

    with pytest.raises(TableIntegrityError):
        parse_table(tampered)


def test_cid_7050_meanings_match_pydicom():
    names = codes.DCM.dir("Option") + codes.DCM.dir("Confidentiality")
    dcm = {code.value: code.meaning for code in map(codes.DCM.__getattr__, names)}

    assert {v: dcm[v] for v in CID_7050} == CID_7050
    assert codes.DCM.DeIdentifyingEquipment.value == "109104"


@pytest.mark.parametrize(
    ("tag", "top_level", "generic"),
    [
        (0x00080022, "X", "Z"),  # Acquisition Date, X/Z: Type 3 in CT
        (0x00080023, "Z", "D"),  # Content Date, Z/D: Type 2C in CT
        (0x00180010, "Z", "D"),  # Contrast/Bolus Agent, Z/D: Type 2
        (0x00081010, "X", "D"),  # Station Name, X/Z/D
        (0x00081140, "X", "U*"),  # Referenced Image Sequence, X/Z/U*
        (0x00100030, "Z", "Z"),  # Patient's Birth Date, Z
    ],
)
def test_combined_codes_resolve_by_context(tag, top_level, generic):
    assert resolve_basic(row(tag), classic_top_level=True) == top_level
    assert resolve_basic(row(tag), classic_top_level=False) == generic


def test_cleaning_beats_keeping_when_options_disagree():
    profile = compile_profile(DEFAULT_OPTIONS)

    # Date of Last Calibration: Retain Device Identity keeps, Modified Dates cleans.
    assert profile.top_level[0x00181200].action == "S"
    assert profile.top_level[0x00181000].action == "K"  # Device Serial Number
    assert profile.top_level[0x00100010].action == "P"  # Patient's Name
    assert profile.top_level[0x0008103E].action == "C"  # Series Description
    assert (
        profile.top_level[0x00080055].action == "X"
    )  # Station AE Title: no AE cleaning
    assert compile_profile(DEFAULT_OPTIONS) is profile  # compiled once


def test_a_worker_compiles_the_table_before_it_forks_its_pool():
    # cases.imaging.tasks runs this on Celery's worker_init, in the main process.
    from cases.imaging.tasks import deid_table_load

    compile_profile.cache_clear()
    deid_table_load()
    assert compile_profile.cache_info().currsize == 1
    hits = compile_profile.cache_info().hits
    compile_profile(DEFAULT_OPTIONS)
    assert compile_profile.cache_info().hits == hits + 1
