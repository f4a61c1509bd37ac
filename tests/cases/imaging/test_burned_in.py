"""Which objects wait for a person's review because their pixels may show identity."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, SecondaryCaptureImageStorage, UltrasoundImageStorage

from cases.imaging.deid import deidentify, quarantine_reason
from cases.imaging.deid.burned_in import BURNED_IN_SOP_CLASSES
from cases.imaging.phantom import PhantomSpec, series

from .support import KWARGS


def ct() -> Dataset:
    return next(series(PhantomSpec(slices=1, rows=16, columns=16)))


def test_a_plain_ct_slice_needs_no_review():
    assert quarantine_reason(ct()) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"BurnedInAnnotation": "YES"}, "Burned In Annotation is YES"),
        ({"SOPClassUID": SecondaryCaptureImageStorage}, "Secondary Capture"),
        ({"SOPClassUID": UltrasoundImageStorage}, "Ultrasound Image Storage"),
        ({"Modality": "OT"}, "modality OT"),
        ({"Modality": "US"}, "modality US"),
        ({"Modality": "ES"}, "modality ES"),
        ({"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "screen capture"),
        ({"ConversionType": "WSD"}, "secondary capture"),
    ],
)
def test_likely_burned_in_text_sends_the_object_to_review(change, words):
    ds = ct()
    for keyword, value in change.items():
        setattr(ds, keyword, value)

    reason = quarantine_reason(ds)

    assert reason is not None and words in reason


def test_an_overlay_kept_in_the_pixel_bits_sends_the_object_to_review():
    ds = ct()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000102, "US", 15)  # bit position in the pixel data, no (6000,3000)

    assert "overlay in the pixel data bits: group 6000" in quarantine_reason(ds)


def test_recognizable_features_matter_outside_volumes_only():
    head = ct()
    head.RecognizableVisualFeatures = "YES"  # a head CT: the anatomy is the face
    photo = ct()
    photo.Modality = "XC"
    photo.RecognizableVisualFeatures = "YES"

    assert quarantine_reason(head) is None
    assert "Recognizable Visual Features" in quarantine_reason(photo)


def test_deidentify_reports_the_reason_and_never_writes_burned_in_no():
    flagged, plain, declared_no = ct(), ct(), ct()
    flagged.BurnedInAnnotation = "YES"
    declared_no.BurnedInAnnotation = "NO"  # the sender's own statement, kept as is

    results = [deidentify(ds, **KWARGS) for ds in (flagged, plain, declared_no)]

    assert results[0].quarantine_reason == "Burned In Annotation is YES"
    assert results[0].report["quarantine_reason"] == results[0].quarantine_reason
    assert flagged.BurnedInAnnotation == "YES"
    assert results[1].quarantine_reason is None
    assert "BurnedInAnnotation" not in plain
    assert declared_no.BurnedInAnnotation == "NO"


def test_the_listed_sop_classes_are_real_ones():
    for uid in BURNED_IN_SOP_CLASSES:
        assert UID(uid).is_valid and UID(uid).name != uid, uid
