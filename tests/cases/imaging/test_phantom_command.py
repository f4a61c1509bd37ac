"""``manage.py phantom_series``: a synthetic CT for a case, to try imaging with."""

import errno
from io import StringIO

import pydicom
import pytest
from django.core.management import CommandError, call_command

from cases.imaging import quality
from cases.imaging.models import AcquisitionProfile
from cases.imaging.phantom import spec_passing
from cases.models import Case

pytestmark = pytest.mark.django_db

SMALL = ["--matrix", "16", "--slices", "3"]  # fails the checks, but quick to write


def _run(*args) -> str:
    out = StringIO()
    call_command("phantom_series", *map(str, args), stdout=out)
    return out.getvalue()


def _read(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@pytest.fixture
def mandible_case(new_case):
    return new_case(anatomical_region=Case.Region.MANDIBLE)


def test_the_series_passes_the_planning_profile_of_the_cases_region(
    mandible_case, tmp_path
):
    folder = tmp_path / "scan"

    out = _run(folder, "--accession", mandible_case.reference)

    slices = _read(folder)
    profile = quality.default_profile(Case.Region.MANDIBLE)
    report = quality.check_series(slices, profile)
    assert report.verdict == quality.PASS, report.as_dict()
    assert {ds.AccessionNumber for ds in slices} == {mandible_case.reference}
    assert {str(ds.PatientName) for ds in slices} == {"PHANTOM^TEST"}
    assert f"Wrote {len(slices)} images" in out
    assert "mandible profile" in out
    assert [p.name for p in tmp_path.iterdir()] == ["scan"]  # no scratch left


def test_an_edited_profile_of_the_installation_sizes_the_series(
    mandible_case, tmp_path
):
    limits = quality.default_profile(Case.Region.MANDIBLE).as_dict()
    limits.update(max_slice_thickness_mm=0.5, min_coverage_mm=20.0)
    limits["allowed_kernels"] = ["B70*"]
    AcquisitionProfile.objects.create(region=Case.Region.MANDIBLE, limits=limits)

    _run(tmp_path / "scan", "--accession", mandible_case.reference)

    slices = _read(tmp_path / "scan")
    assert {float(ds.SliceThickness) for ds in slices} == {0.5}
    assert {ds.ConvolutionKernel for ds in slices} == {"B70"}
    edited = quality.AcquisitionProfile.from_dict(limits)
    assert quality.check_series(slices, edited).verdict == quality.PASS


def test_a_thicker_slice_asked_for_fails_that_check_and_still_covers(
    mandible_case, tmp_path
):
    _run(tmp_path / "scan", "--accession", mandible_case.reference, "--thickness", 2)

    slices = _read(tmp_path / "scan")
    report = quality.check_series(slices, quality.default_profile(Case.Region.MANDIBLE))
    assert report.check("slice_thickness").verdict == quality.FAIL
    assert report.check("coverage").verdict == quality.PASS
    assert {c.name for c in report.checks if c.verdict == quality.FAIL} <= {
        "slice_thickness",
        "slice_spacing",
    }


def test_each_run_is_a_new_series_unless_the_seed_is_given(mandible_case, tmp_path):
    ref = mandible_case.reference
    for name, seed in (
        ("a", ()),
        ("b", ()),
        ("c", ("--seed", 7)),
        ("d", ("--seed", 7)),
    ):
        _run(tmp_path / name, "--accession", ref, *SMALL, *seed)

    uids = {
        name: [ds.SOPInstanceUID for ds in _read(tmp_path / name)] for name in "abcd"
    }
    assert uids["a"] != uids["b"]
    assert uids["c"] == uids["d"]


def test_an_unknown_reference_is_refused_unless_a_region_is_given(db, tmp_path):
    with pytest.raises(CommandError, match="No case has the reference 'C-2099-00001'"):
        _run(tmp_path / "scan", "--accession", "C-2099-00001")
    assert not (tmp_path / "scan").exists()

    _run(tmp_path / "scan", "--accession", "C-2099-00001", "--region", "pelvis", *SMALL)

    assert {ds.AccessionNumber for ds in _read(tmp_path / "scan")} == {"C-2099-00001"}


def test_a_folder_with_files_in_it_is_left_alone(mandible_case, tmp_path):
    folder = tmp_path / "scan"
    folder.mkdir()
    (folder / "0001.dcm").write_bytes(b"someone's file")

    with pytest.raises(CommandError, match="not a new or empty folder"):
        _run(folder, "--accession", mandible_case.reference, *SMALL)

    assert (folder / "0001.dcm").read_bytes() == b"someone's file"
    assert [p.name for p in folder.iterdir()] == ["0001.dcm"]


def test_a_failed_write_leaves_no_folder_and_no_half_series(
    mandible_case, tmp_path, monkeypatch
):
    from cases.imaging import phantom

    real = phantom.write_series

    def disk_full(directory, spec):
        real(directory, spec)  # the files are there, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        "cases.management.commands.phantom_series.write_series", disk_full
    )
    with pytest.raises(CommandError, match="No space left on device"):
        _run(tmp_path / "scan", "--accession", mandible_case.reference, *SMALL)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--thickness", "0"], ["--matrix", "4"]])
def test_impossible_sizes_are_refused_by_name(mandible_case, tmp_path, args):
    err = StringIO()
    with pytest.raises(CommandError, match=args[0]):
        call_command(
            "phantom_series",
            str(tmp_path / "scan"),
            "--accession",
            mandible_case.reference,
            *args,
            stderr=err,
        )
    assert not (tmp_path / "scan").exists()


def test_spec_passing_takes_the_strictest_of_several_profiles():
    cranial = quality.default_profile(Case.Region.CRANIAL)
    pelvis = quality.default_profile(Case.Region.PELVIS)

    spec = spec_passing([cranial, pelvis])

    assert spec.slice_thickness == min(
        cranial.max_slice_thickness_mm, pelvis.max_slice_thickness_mm
    )
    assert spec.coverage_mm >= max(cranial.min_coverage_mm, pelvis.min_coverage_mm)


def test_spec_passing_finds_a_kernel_every_profile_accepts_or_says_there_is_none():
    def accepting(*patterns):
        limits = quality.default_profile(Case.Region.CRANIAL).as_dict()
        limits["allowed_kernels"] = list(patterns)
        return quality.AcquisitionProfile.from_dict(limits)

    siemens, both = accepting("B70*", "H70?"), accepting("H70?", "FC30")

    assert spec_passing([siemens]).convolution_kernel == "B70"
    assert spec_passing([siemens, both]).convolution_kernel == "H70X"
    # A kernel asked for is kept, accepted or not: that is how a check fails.
    assert spec_passing([siemens], convolution_kernel="SOFT").convolution_kernel == (
        "SOFT"
    )
    with pytest.raises(ValueError, match="no common convolution kernel"):
        spec_passing([siemens, accepting("FC30")])
