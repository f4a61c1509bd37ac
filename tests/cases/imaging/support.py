"""Keys a caller would hold, and the dciodvfy helper."""

from __future__ import annotations

import io
import shutil
import subprocess

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian

SECRET = b"psi-test-uid-secret-0123456789ab"
OFFSET = -4321
PSEUDONYM = "PSI-7F3K2Q"
KWARGS = {"pseudonym": PSEUDONYM, "uid_secret": SECRET, "date_offset_days": OFFSET}


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's error lines for a file (warnings are not counted)."""
    run = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, check=False
    )
    lines = (run.stdout + run.stderr).splitlines()
    return sorted(line for line in lines if line.startswith("Error"))


needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)",
)


def big_endian(data: bytes) -> bytes:
    """A Part 10 file in explicit VR big endian (retired, still sent by old
    systems): what neither fast path reads."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(
        buffer, ds, little_endian=False, implicit_vr=False, force_encoding=True
    )
    return buffer.getvalue()
