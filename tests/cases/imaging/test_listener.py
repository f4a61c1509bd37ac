"""The C-STORE listener, driven by dcmtk's storescu and echoscu as a hospital PACS
would drive it, and by pynetdicom for what dcmtk cannot easily show (an association
held open, TLS)."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import io
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from django.core.management import call_command
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, Verification

from cases.imaging import quality, rawdicom, services
from cases.imaging.listener import (
    NO_CASE,
    REFUSED,
    Listener,
    presentation_data_values,
    tls_context,
)
from cases.imaging.models import (
    AcquisitionProfile,
    DicomPeer,
    ImagingInstance,
    ImagingStudy,
)
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.staging import Staged
from cases.models import Case
from consent.models import Consent
from consent.services import consent_withdraw
from psi.durable import RecordFile
from psi.models import Job

S = Case.Status
OUR_AE = "PSI_TEST"
PACS_AE = "HOSPA_PACS"
SLICES = 10

needs_dcmtk = pytest.mark.skipif(
    shutil.which("storescu") is None or shutil.which("echoscu") is None,
    reason="dcmtk's storescu/echoscu not installed (Debian package dcmtk; "
    ".ci/run installs it)",
)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def enqueued(monkeypatch):
    """Records each ingest_enqueue call, with the staged files' bytes at that moment
    (the real ingest would consume them)."""
    calls = []

    def record(*, actor, case, paths, source, calling_ae_title="", complete=True):
        calls.append(
            {
                "actor": actor,
                "case": case.reference,
                "paths": list(paths),
                "bytes": {ref: Staged.parse(ref).read_bytes() for ref in paths},
                "source": source,
                "calling_ae_title": calling_ae_title,
                "complete": complete,
            }
        )

    monkeypatch.setattr(services, "ingest_enqueue", record)
    return calls


@pytest.fixture
def staging_root(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"
    return settings.PSI_STAGING_DIR


@pytest.fixture
def listener(staging_root):
    """A listener on a free port of this host, batches of 4."""
    running = Listener(
        host="127.0.0.1", port=0, ae_title=OUR_AE, batch_size=4, batch_seconds=3600
    )
    running.start()
    yield running
    running.stop(grace=2)


@pytest.fixture
def peer(hospital_a):
    return DicomPeer.objects.create(hospital=hospital_a, ae_title=PACS_AE)


@pytest.fixture
def series_for(tmp_path):
    """A 10-slice 64 x 64 phantom CT whose Accession Number is ``accession``."""

    def write(accession: str) -> list[Path]:
        paths = write_series(
            tmp_path / f"series-{accession}",
            PhantomSpec(slices=SLICES, rows=64, columns=64, seed=11),
        )
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.AccessionNumber = accession
            ds.save_as(path, enforce_file_format=True)
        return paths

    return write


def _store(listener: Listener, paths, calling: str):
    host, port = listener.address
    return subprocess.run(
        ["storescu", "-d", "-aet", calling, "-aec", OUR_AE, host, str(port)]
        + [str(path) for path in paths],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _settle(listener: Listener, seconds: float = 10) -> None:
    """Wait for the associations to end and their batches to reach the ingest."""
    deadline = time.monotonic() + seconds
    while listener.ae.active_associations:
        assert time.monotonic() < deadline, "an association is still open"
        time.sleep(0.02)
    listener.drain()


def _dimse_status(output: str) -> int | None:
    """The status of storescu's first C-STORE response (it stops at a failure)."""
    found = re.search(r"DIMSE Status\s*:\s*0x([0-9a-f]{4})", output)
    return int(found.group(1), 16) if found else None


def _dataset_bytes(data: bytes) -> bytes:
    """What follows the file meta of a Part 10 file: preamble and "DICM" (132
    bytes), then (0002,0000) File Meta Information Group Length, explicit VR little
    endian (12 bytes), then the group it counts."""
    assert data[128:132] == b"DICM"
    assert data[132:138] == b"\x02\x00\x00\x00UL"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def _staged(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


@needs_dcmtk
def test_storescu_series_is_staged_raw_and_handed_to_ingest(
    listener, peer, case_at, series_for, enqueued, staging_root
):
    case = case_at(S.SUBMITTED)
    paths = series_for(case.reference)

    run = _store(listener, paths, PACS_AE)

    assert run.returncode == 0, run.stdout + run.stderr
    # Batches of 4, the rest when the association was released: the last batch
    # says the sender is done, so the study is judged without waiting.
    _settle(listener)
    assert [len(c["paths"]) for c in enqueued] == [4, 4, 2]
    assert [c["complete"] for c in enqueued] == [False, False, True]
    assert {c["case"] for c in enqueued} == {case.reference}
    assert {c["source"] for c in enqueued} == {"cstore"}
    assert {c["calling_ae_title"] for c in enqueued} == {PACS_AE}
    assert {c["actor"] for c in enqueued} == {None}
    staged = {}
    for call in enqueued:
        staged.update(call["bytes"])
    folder = Path(staging_root) / str(case.id)
    # The objects are records of batch files of the case's folder, two a batch.
    files = {Staged.parse(ref).path for ref in staged}
    assert {path.parent for path in files} == {folder}
    assert {path.suffix for path in files} == {".dcms"}
    per_job = [len({Staged.parse(ref).path for ref in c["paths"]}) for c in enqueued]
    assert per_job == [2, 2, 1]
    assert len(files) == 5
    assert all(Staged.parse(ref).is_record for ref in staged)
    sent = sorted(_dataset_bytes(p.read_bytes()) for p in paths)
    received = sorted(_dataset_bytes(data) for data in staged.values())
    assert received == sent
    for data in staged.values():
        meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == CTImageStorage
    # No temporary file is left behind.
    assert _staged(staging_root) == sorted(files)


@needs_dcmtk
def test_release_after_a_full_batch_still_says_the_study_is_complete(
    listener, peer, case_at, series_for, enqueued
):
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference)[:8], PACS_AE)

    assert run.returncode == 0, run.stdout + run.stderr
    _settle(listener)
    # The second full batch waited for a next object and went with the release,
    # as the last batch of the association: one job per file of it, so two
    # worker processes share it, each saying the study is complete (it is judged
    # once both are in).
    assert [len(c["paths"]) for c in enqueued] == [4, 2, 2]
    assert [c["complete"] for c in enqueued] == [False, True, True]
    last = [{Staged.parse(ref).path for ref in c["paths"]} for c in enqueued[1:]]
    assert len(last[0] | last[1]) == 2 and not last[0] & last[1]


@needs_dcmtk
def test_the_jobs_of_a_last_batch_are_queued_together_or_not_at_all(
    listener, peer, case_at, series_for, monkeypatch, staging_root
):
    """Queued apart, the first job of a last batch could be judged complete before
    its sibling exists; queued together, a failure leaves both batch files staged
    for the sweep to find (and the first batch's job queued)."""
    case = case_at(S.SUBMITTED)
    calls = []

    def enqueue(*, paths, complete, **_):
        calls.append(len(paths))
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        # A row of the handover's transaction, to see which of them commit.
        Job.objects.create(kind="test.ingest", task_name="none", params={"n": 1})

    monkeypatch.setattr(services, "ingest_enqueue", enqueue)
    run = _store(listener, series_for(case.reference)[:8], PACS_AE)

    assert run.returncode == 0, run.stdout + run.stderr
    _settle(listener)
    assert calls == [4, 2, 2]
    assert Job.objects.filter(kind="test.ingest").count() == 1  # the first batch's
    assert len(_staged(staging_root)) == 4  # two files a batch, none removed


def test_an_aborted_association_does_not_say_the_study_is_complete(
    listener, peer, case_at, series_for, enqueued
):
    case = case_at(S.SUBMITTED)
    assoc = _client(listener)
    status = assoc.send_c_store(pydicom.dcmread(series_for(case.reference)[0]))
    assert status.Status == 0x0000
    assoc.abort()

    _settle(listener)
    assert [(len(c["paths"]), c["complete"]) for c in enqueued] == [(1, None)]


@needs_dcmtk
def test_unknown_calling_ae_title_is_rejected_at_association(
    listener, peer, case_at, series_for, enqueued, staging_root
):
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference)[:1], "STRANGER")

    assert run.returncode != 0
    assert "Association Rejected" in run.stdout + run.stderr
    assert "Calling AE Title Not Recognized" in run.stdout + run.stderr
    assert _staged(staging_root) == []
    assert enqueued == []


@needs_dcmtk
def test_inactive_peer_is_rejected_at_association(
    listener, peer, case_at, series_for, enqueued, staging_root
):
    peer.is_active = False
    peer.save()
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference)[:1], PACS_AE)

    assert run.returncode != 0
    assert "Association Rejected" in run.stdout + run.stderr
    assert enqueued == []


@needs_dcmtk
@pytest.mark.parametrize(
    ("networks", "admitted"),
    [
        ("192.0.2.0/24, 10.9.0.0/16", False),  # our storescu calls from 127.0.0.1
        ("192.0.2.7 127.0.0.0/8", True),
        ("127.0.0.1", True),
    ],
)
def test_a_peer_is_admitted_only_from_its_networks(
    listener, peer, case_at, series_for, enqueued, staging_root, networks, admitted
):
    peer.networks = networks
    peer.save()
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference)[:1], PACS_AE)
    _settle(listener)

    output = run.stdout + run.stderr
    if admitted:
        assert run.returncode == 0, output
        assert len(_staged(staging_root)) == 1
        assert len(enqueued) == 1
    else:
        assert run.returncode != 0
        assert "Calling AE Title Not Recognized" in output
        assert _staged(staging_root) == []
        assert enqueued == []


@needs_dcmtk
def test_wrong_called_ae_title_is_rejected(listener, peer):
    host, port = listener.address
    run = subprocess.run(
        ["echoscu", "-aet", PACS_AE, "-aec", "NOT_US", host, str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode != 0
    assert "Called AE Title Not Recognized" in run.stdout + run.stderr


@needs_dcmtk
def test_consent_missing_fails_each_object_and_stages_nothing(
    listener, peer, case_at, surgeon, series_for, enqueued, staging_root
):
    case = case_at(S.SUBMITTED)
    for consent in Consent.objects.filter(patient=case.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Changed their mind")
    run = _store(listener, series_for(case.reference)[:2], PACS_AE)

    output = run.stdout + run.stderr
    assert _dimse_status(output) == REFUSED, output
    assert "No consent covers imaging for this case" in output
    assert _staged(staging_root) == []
    assert enqueued == []


@needs_dcmtk
def test_case_of_another_hospital_is_not_found(
    listener, hospital_b, case_at, series_for, enqueued, staging_root
):
    DicomPeer.objects.create(hospital=hospital_b, ae_title="HOSPB_PACS")
    case = case_at(S.SUBMITTED)  # of hospital A
    run = _store(listener, series_for(case.reference)[:1], "HOSPB_PACS")

    output = run.stdout + run.stderr
    assert _dimse_status(output) == NO_CASE, output
    assert "No case matches the Accession Number" in output
    assert _staged(staging_root) == []
    assert enqueued == []


@needs_dcmtk
def test_unknown_accession_number_is_not_found(
    listener, peer, series_for, enqueued, staging_root
):
    run = _store(listener, series_for("C-1999-99999")[:1], PACS_AE)

    assert _dimse_status(run.stdout + run.stderr) == NO_CASE
    assert _staged(staging_root) == []


@needs_dcmtk
def test_echoscu_verifies_the_connection(listener, peer):
    host, port = listener.address
    run = subprocess.run(
        ["echoscu", "-v", "-aet", PACS_AE, "-aec", OUR_AE, host, str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Received Echo Response (Success)" in run.stdout + run.stderr


def _client(listener: Listener, **kwargs):
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    host, port = listener.address
    return ae.associate(host, port, ae_title=OUR_AE, **kwargs)


@pytest.mark.parametrize("served_by", ["dul-thread", "pynetdicom"])
def test_small_pdus_and_an_echo_between_stores_on_one_association(
    listener, peer, case_at, series_for, enqueued, staging_root, served_by, monkeypatch
):
    """A peer limited to 1 kB PDUs sends each slice in many fragments, the
    Accession Number beyond the first; C-ECHO (left to pynetdicom) works between
    the C-STOREs and a refused object gets its status and comment. The same
    whether the DUL thread serves the C-STOREs as they arrive or, for a command
    it leaves alone, pynetdicom does."""
    if served_by == "pynetdicom":
        monkeypatch.setattr(rawdicom, "store_request", lambda command: None)
    case = case_at(S.SUBMITTED)
    paths = series_for(case.reference)[:2]
    for path in paths:  # a long value in front of the Accession Number
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] + ["DERIVED"] * 200
        ds.save_as(path, enforce_file_format=True)
    stranger = series_for("C-1999-99999")[0]
    listener.ae.maximum_pdu_size = 1024  # what the peer may send us
    assoc = _client(listener)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 1024
    try:
        assert assoc.send_c_store(pydicom.dcmread(paths[0])).Status == 0x0000
        assert assoc.send_c_echo().Status == 0x0000
        refused = assoc.send_c_store(pydicom.dcmread(stranger))
        assert refused.Status == NO_CASE
        assert refused.ErrorComment == "No case matches the Accession Number"
        assert assoc.send_c_store(pydicom.dcmread(paths[1])).Status == 0x0000
    finally:
        assoc.release()
    _settle(listener)

    staged = {}
    for call in enqueued:
        staged.update(call["bytes"])
    sent = sorted(_dataset_bytes(p.read_bytes()) for p in paths)
    assert sorted(_dataset_bytes(data) for data in staged.values()) == sent
    assert [c["complete"] for c in enqueued] == [True]


def test_a_disk_that_refuses_the_write_is_answered_out_of_resources(
    listener, peer, case_at, series_for, enqueued, staging_root, monkeypatch
):
    """The object is not stored, the peer hears so (and may send it again); what
    was stored before and after it is handed over as usual."""
    case = case_at(S.SUBMITTED)
    paths = series_for(case.reference)[:3]
    real = RecordFile.append
    calls = []

    def full_once(self, chunks):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunks)

    monkeypatch.setattr(RecordFile, "append", full_once)
    assoc = _client(listener)
    try:
        statuses = [assoc.send_c_store(pydicom.dcmread(p)) for p in paths]
    finally:
        assoc.release()
    _settle(listener)

    assert [s.Status for s in statuses] == [0x0000, 0xA700, 0x0000]
    assert statuses[1].ErrorComment == "Could not store the object"
    [call] = enqueued
    received = sorted(_dataset_bytes(data) for data in call["bytes"].values())
    assert received == sorted(_dataset_bytes(p.read_bytes()) for p in paths[::2])


@needs_dcmtk
def test_data_pdus_reach_the_receiver_without_pynetdicom_decoding_them(
    listener, peer, case_at, series_for, enqueued, monkeypatch
):
    """storescu sends each slice in several P-DATA-TF PDUs; the listener reads
    them itself (``_PduReader``): pynetdicom decodes only the association's own
    PDUs. (Were pynetdicom to rename what the listener replaces, this would
    fail rather than the listener silently copying every PDU three times.)"""
    decoded = []
    decode = DULServiceProvider._decode_pdu

    def spy(self, bytestream):
        decoded.append(bytestream[0])
        return decode(self, bytestream)

    monkeypatch.setattr(DULServiceProvider, "_decode_pdu", spy)
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference)[:3], PACS_AE)
    assert run.returncode == 0, run.stdout + run.stderr
    _settle(listener)
    assert sum(len(c["paths"]) for c in enqueued) == 3
    assert decoded == [0x01, 0x05]  # A-ASSOCIATE-RQ, A-RELEASE-RQ


def test_a_handler_bound_to_received_pdus_still_sees_each_one(
    listener, peer, case_at, series_for, enqueued
):
    """Whoever binds pynetdicom's per-PDU events gets them: the listener leaves
    every PDU of such an association to pynetdicom."""
    seen = []
    listener._server.bind(evt.EVT_PDU_RECV, lambda event: seen.append(event.pdu))
    case = case_at(S.SUBMITTED)
    path = series_for(case.reference)[0]
    listener.ae.maximum_pdu_size = 4096  # what the peer may send us
    assoc = _client(listener)
    try:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    finally:
        assoc.release()
    _settle(listener)
    data_pdus = [pdu for pdu in seen if isinstance(pdu, P_DATA_TF)]
    assert len(data_pdus) > 2  # the command, then the data set in 4 kB pieces
    [call] = enqueued
    assert _dataset_bytes(next(iter(call["bytes"].values()))) == _dataset_bytes(
        path.read_bytes()
    )


@pytest.mark.parametrize(
    "pdu",
    [
        # One item claiming 100 bytes in a P-DATA-TF that holds 10 of them.
        b"\x04\x00\x00\x00\x00\x0a"
        + (100).to_bytes(4, "big")
        + b"\x01\x03"
        + b"\x00" * 4,
        # Four gigabytes announced: refused on the header, nothing allocated.
        b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 64,
    ],
    ids=["item-overruns-the-pdu", "longer-than-allowed"],
)
def test_an_invalid_data_pdu_aborts_the_association_with_nothing_staged(
    listener, peer, staging_root, pdu
):
    assoc = _client(listener)
    assert assoc.is_established
    assoc.dul.socket.send(pdu)
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted
    _settle(listener)
    assert _staged(staging_root) == []


@pytest.mark.parametrize(
    "pdu",
    [
        b"\x01\x00\xff\xff\xff\xff",  # an association request of 4 GB
        b"\x01\x00\x00\x00\x00\x04\x00\x01\x00\x00",  # one cut short
    ],
    ids=["longer-than-allowed", "undecodable"],
)
def test_an_invalid_pdu_before_association_closes_the_connection_cleanly(
    listener, pdu, caplog
):
    """Refused before the peer has said who it is: the connection is closed
    (after an A-ABORT) and the listener's warning names no AE title it lacks,
    rather than failing on it."""
    with socket.create_connection(listener.address, timeout=5) as peer_socket:
        peer_socket.sendall(pdu)
        received = b""
        while chunk := peer_socket.recv(4096):
            received += chunk
    assert received[:1] in (b"", b"\x07")  # nothing, or an A-ABORT
    assert "a peer not yet associated" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Two items: a command fragment (last) on context 1, data on context 3.
        (
            b"\x00\x00\x00\x04\x01\x03ab" + b"\x00\x00\x00\x03\x03\x00c",
            [(1, b"\x03ab"), (3, b"\x00c")],
        ),
        (b"\x00\x00\x00\x02\x05\x02", [(5, b"\x02")]),  # an empty fragment
        (b"", None),  # no item
        (b"\x00\x00\x00\x01\x01", None),  # no message control header
        (b"\x00\x00\x00\x05\x01\x03ab", None),  # longer than the PDU
        (b"\x00\x00\x00\x03\x01\x03a\x00", None),  # bytes after the last item
        (b"\x00\x00\x00", None),  # a cut item length
    ],
)
def test_presentation_data_values_fill_the_pdu_exactly(body, expected):
    values = presentation_data_values(bytearray(body))
    if expected is None:
        assert values is None
    else:
        assert [(context, bytes(value)) for context, value in values] == expected


def test_accepted_connections_do_not_wait_for_delayed_acks(listener, peer):
    # Without TCP_NODELAY a dcmtk peer stalls on every C-STORE (200 slices take
    # seconds instead of a fraction of one).
    assoc = _client(listener)
    try:
        [served] = listener.ae.active_associations
        sock = served.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        assoc.release()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_associations_leave_no_descriptor_open(listener, peer):
    # Each association waits on its socket and on a pipe of its own (_Socket):
    # the pipe goes when the association ends, however it ends.
    for end in ("release", "abort", "release"):
        assoc = _client(listener)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        getattr(assoc, end)()
    _settle(listener)
    before = _open_descriptors()
    for end in ("release", "abort") * 3:
        assoc = _client(listener)
        assert assoc.send_c_echo().Status == 0x0000
        getattr(assoc, end)()
    _settle(listener)
    deadline = time.monotonic() + 5
    while _open_descriptors() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # the last association's threads are finishing
    assert _open_descriptors() <= before


@pytest.fixture
def listener_with(staging_root):
    """A listener with limits of the test's choosing (``Listener`` keywords)."""
    started = []

    def start(**limits) -> Listener:
        running = Listener(host="127.0.0.1", port=0, ae_title=OUR_AE, **limits)
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace=1)


def _wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_connection_that_says_nothing_is_closed_after_the_acse_timeout(
    listener_with,
):
    listener = listener_with(acse_timeout=0.5)
    with socket.create_connection(listener.address, timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(64) == b""  # closed by the listener, nothing sent
        waited = time.monotonic() - started
    assert 0.4 < waited < 5
    assert _wait_until(lambda: not listener.ae.active_associations, 5)


def test_a_silent_association_is_aborted_after_the_network_timeout(listener_with, peer):
    listener = listener_with(network_timeout=1)
    assoc = _client(listener)
    assert assoc.is_established
    assert _wait_until(lambda: assoc.is_aborted, 10)
    assert _wait_until(lambda: not listener.ae.active_associations, 5)


def test_associations_beyond_the_limit_are_rejected_as_transient(listener_with, peer):
    listener = listener_with(max_associations=2)
    first, second = _client(listener), _client(listener)
    try:
        assert first.is_established and second.is_established
        third = _client(listener)
        assert third.is_rejected
        answer = third.acceptor.primitive
        # Rejected transient, by the presentation service: local limit exceeded.
        assert (answer.result, answer.result_source, answer.diagnostic) == (2, 3, 2)
    finally:
        first.release()
        second.release()
    # Once one ends, the next is accepted.
    fourth = _client(listener)
    assert fourth.is_established
    fourth.release()


def test_batch_waiting_too_long_is_handed_over_while_association_stays_open(
    listener, peer, case_at, series_for, enqueued
):
    case = case_at(S.SUBMITTED)
    assoc = _client(listener)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(pydicom.dcmread(series_for(case.reference)[0]))
        assert status.Status == 0x0000
        listener.flush_stale()
        listener.drain()
        assert enqueued == []  # not stale yet
        listener.batch_seconds = 0
        listener.flush_stale()
        listener.drain()
        assert [len(c["paths"]) for c in enqueued] == [1]
    finally:
        assoc.release()


def test_shutdown_hands_over_pending_batches(
    staging_root, peer, case_at, series_for, enqueued
):
    running = Listener(
        host="127.0.0.1", port=0, ae_title=OUR_AE, batch_size=50, batch_seconds=3600
    )
    running.start()
    case = case_at(S.SUBMITTED)
    assoc = _client(running)
    status = assoc.send_c_store(pydicom.dcmread(series_for(case.reference)[0]))
    assert status.Status == 0x0000
    # The client never releases: stop() aborts it after the grace period, and the
    # study will be judged once it has been quiet.
    running.stop(grace=0.2)
    assert [(len(c["paths"]), c["complete"]) for c in enqueued] == [(1, None)]
    assert assoc.is_aborted or not assoc.is_established


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "psi-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_listener_accepts_a_tls_peer(
    staging_root, peer, case_at, series_for, enqueued, certificate
):
    cert, key = certificate
    running = Listener(
        host="127.0.0.1",
        port=0,
        ae_title=OUR_AE,
        ssl_context=tls_context(str(cert), str(key)),
        batch_size=50,
        batch_seconds=3600,
    )
    running.start()
    try:
        case = case_at(S.SUBMITTED)
        client_context = ssl.create_default_context(cafile=str(cert))
        assoc = _client(running, tls_args=(client_context, "127.0.0.1"))
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(series_for(case.reference)[0]))
        assoc.release()
        assert status.Status == 0x0000
    finally:
        running.stop(grace=2)
    assert [len(c["paths"]) for c in enqueued] == [1]


@needs_dcmtk
def test_storescu_study_reaches_the_real_ingest(
    listener, peer, case_at, series_for, staging_root
):
    # Planning-quality limits a 64 x 64 phantom (and each batch of it) passes: this
    # test is about delivery, the quality checks have their own.
    AcquisitionProfile.objects.create(
        region=Case.Region.CRANIAL,
        limits=dataclasses.replace(
            quality.default_profile(Case.Region.CRANIAL),
            min_matrix=64,
            min_coverage_mm=1.0,
        ).as_dict(),
    )
    case = case_at(S.SUBMITTED)
    run = _store(listener, series_for(case.reference), PACS_AE)
    assert run.returncode == 0, run.stdout + run.stderr

    # Eager Celery: the ingest runs in the listener's hand-over thread, batch by
    # batch; the test reads only when it is done (SQLite's shared in-memory test
    # database locks whole tables).
    _settle(listener)
    study = ImagingStudy.objects.get(case=case)
    assert study.instance_count == SLICES
    assert study.source == ImagingStudy.Source.CSTORE
    assert study.calling_ae_title == PACS_AE
    assert ImagingInstance.objects.filter(study=study).count() == SLICES
    assert _staged(staging_root) == []  # the ingest consumed what it staged


def test_command_serves_until_told_to_stop(
    monkeypatch, staging_root, peer, case_at, series_for, enqueued
):
    handlers = {}
    monkeypatch.setattr(
        "cases.management.commands.dicom_listener.signal.signal",
        lambda signum, handler: handlers.setdefault(signum, handler),
    )
    out = io.StringIO()
    command = threading.Thread(
        target=call_command,
        args=["dicom_listener", "--port", "0", "--ae-title", OUR_AE, "--grace", "1"],
        kwargs={"stdout": out},
    )
    command.start()
    try:
        deadline = time.monotonic() + 10
        while not re.search(r"DICOM listener \S+ on \S+:\d+\n", out.getvalue()):
            assert command.is_alive() and time.monotonic() < deadline, out.getvalue()
            time.sleep(0.05)
        port = int(re.search(r":(\d+)\n", out.getvalue()).group(1))
        case = case_at(S.SUBMITTED)
        ae = AE(ae_title=PACS_AE)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(series_for(case.reference)[0]))
        assert status.Status == 0x0000
        # SIGTERM with the association still open: its batch is handed over.
        handlers[signal.SIGTERM](signal.SIGTERM, None)
        command.join(timeout=15)
        assert not command.is_alive()
    finally:
        if command.is_alive():
            handlers[signal.SIGINT](signal.SIGINT, None)
            command.join(timeout=15)
    assert set(handlers) == {signal.SIGTERM, signal.SIGINT}
    assert [len(c["paths"]) for c in enqueued] == [1]
    assert "Stopping" in out.getvalue()


def test_tls_listener_with_a_ca_requires_a_client_certificate(
    staging_root, peer, certificate
):
    cert, key = certificate
    # The self-signed certificate stands in for the hospitals' CA and their client.
    running = Listener(
        host="127.0.0.1",
        port=0,
        ae_title=OUR_AE,
        ssl_context=tls_context(str(cert), str(key), str(cert)),
    )
    running.start()
    try:
        anonymous = ssl.create_default_context(cafile=str(cert))
        refused = _client(running, tls_args=(anonymous, "127.0.0.1"))
        assert not refused.is_established

        known = ssl.create_default_context(cafile=str(cert))
        known.load_cert_chain(certfile=str(cert), keyfile=str(key))
        assoc = _client(running, tls_args=(known, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        running.stop(grace=2)
