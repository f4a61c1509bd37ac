"""Write a synthetic head CT for a case, to try the ways imaging comes in (the C-STORE
listener, STOW-RS, an upload) before any patient's scan does. The patient is an
invented phantom; the Accession Number is the case reference, which routes it."""

import argparse
import secrets
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cases.imaging.phantom import spec_passing, write_series
from cases.imaging.services import case_for_accession, region_profile
from cases.models import Case


def _positive(kind, least=1):
    def parse(text: str):
        value = kind(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


class Command(BaseCommand):
    help = (
        "Write a synthetic head CT (an invented phantom) for a case: sized to pass the "
        "planning profile of its region unless told otherwise."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", help="New or empty folder for the files")
        parser.add_argument(
            "--accession",
            required=True,
            help="Accession Number: the reference of the case it is for",
        )
        parser.add_argument(
            "--region",
            choices=Case.Region.values,
            help="Size it for this region's profile (default: the case's region)",
        )
        parser.add_argument("--slices", type=_positive(int), help="Number of images")
        parser.add_argument(
            "--thickness", type=_positive(float, 0.01), help="Slice thickness, mm"
        )
        parser.add_argument("--matrix", type=_positive(int, 8), help="Rows and columns")
        parser.add_argument(
            "--gantry-tilt", type=float, default=0.0, help="Degrees (0: none)"
        )
        parser.add_argument(
            "--seed",
            type=int,
            help="Same seed, same UIDs and pixels (default: a new series each time)",
        )

    def handle(self, *args, **options):
        reference = options["accession"].strip()
        region = options["region"]
        if region is None:
            case = case_for_accession(reference)
            if case is None:
                raise CommandError(
                    f"No case has the reference {reference!r}: check it, or give "
                    "--region to write a series for a case elsewhere."
                )
            region = case.anatomical_region
        folder = Path(options["folder"])
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise CommandError(f"{folder} is not a new or empty folder.")

        seed = options["seed"]
        if seed is None:
            seed = secrets.randbelow(2**31)
        fields = {
            "accession_number": reference,
            "seed": seed,
            "gantry_tilt": options["gantry_tilt"],
        }
        if options["slices"] is not None:
            fields["slices"] = options["slices"]
        if options["thickness"] is not None:
            fields["slice_thickness"] = options["thickness"]
        if options["matrix"] is not None:
            fields["rows"] = fields["columns"] = options["matrix"]
        try:
            spec = spec_passing([region_profile(region)], **fields)
        except ValueError as error:
            raise CommandError(str(error)) from None

        try:
            paths = self._write(folder, spec)
        except OSError as error:
            raise CommandError(f"Could not write {folder}: {error.strerror}") from None

        self.stdout.write(
            f"Wrote {len(paths)} images of a synthetic head CT to {folder}: "
            f"{spec.slice_thickness:g} mm slices, {spec.rows} x {spec.columns}, "
            f"{spec.coverage_mm:g} mm along the axis, Accession Number {reference}, "
            f"sized for the {region} profile (seed {seed}).\n"
            "Send them, for example (with your peer's AE title):\n"
            f"  TCP_NODELAY=1 storescu -aet <PEER> -aec {settings.PSI_DICOM_AE_TITLE} "
            f"{settings.PSI_DICOM_HOST} {settings.PSI_DICOM_PORT} {folder}/*.dcm"
        )

    @staticmethod
    def _write(folder: Path, spec) -> list[Path]:
        """Write the series next to ``folder``, then rename it into place: the
        folder never holds half a series."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".phantom-", dir=folder.parent))
        try:
            paths = write_series(scratch, spec)
            if folder.exists():
                folder.rmdir()  # empty, checked; not empty now: OSError
            scratch.rename(folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return [folder / path.name for path in paths]
