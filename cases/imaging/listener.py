"""The DICOM C-STORE listener: a hospital PACS pushes a study to us over DICOM.

One pynetdicom acceptor serves Verification (C-ECHO) and the storage SOP classes of
planning images (CT, MR, secondary capture). Who may send is decided at association:
the calling AE title must be an active ``DicomPeer`` calling from an address its
``networks`` allow (``services.dicom_peer_admit``) and the called AE title ours;
anyone else gets an A-ASSOCIATE-RJ before a byte of a dataset is accepted.

Each object is routed by its Accession Number, which the hospital sets to the case
reference, within the calling peer's hospital only. An object is staged as the raw
bytes the peer sent (file meta in front, never decoded and re-encoded), durably
before the peer hears it was stored (``staging.StagedBatch``: a record of the
batch's file, fdatasynced), and handed to the ingest in batches per case: when a
batch is full and the next object arrives, when it has waited long enough, and when
the association ends (that last batch as two jobs, see ``_Batch``).

Logs carry AE titles, case references and counts, never patient identity or the
hospital's UIDs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from io import BytesIO

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config, evt
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from cases.imaging import rawdicom, services, staging
from cases.models import Case
from consent.services import ConsentMissing
from psi import jobs
from psi.errors import Conflict, PermissionRefused

logger = logging.getLogger(__name__)

STORAGE_SOP_CLASSES = (
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    EnhancedMRImageStorage,
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
)
#: Accepted as sent; the ingest decides what it can read.
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    RLELossless,
)
_ACCESSION_NUMBER = Tag(0x0008, 0x0050)
_PREAMBLE = b"\x00" * 128 + b"DICM"
#: How long an association's threads wait for something to do before they look
#: at timers and at the association's state again (they wake at once for data).
IDLE_WAIT_SECONDS = 0.005

# C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C). The reason goes in the Error
# Comment (0000,0902), an LO of at most 64 characters.
SUCCESS = 0x0000
NO_CASE = 0xC001  # Error: cannot understand (no case of this hospital to file it in)
REFUSED = 0xC002  # Error: cannot understand (the case accepts no imaging now)
UNREADABLE = 0xC000  # Error: cannot understand (the header could not be read)
OUT_OF_RESOURCES = 0xA700  # Refused: out of resources (the disk write failed)
PROCESSING_FAILURE = 0x0110


#: A C-STORE failure: status and error comment.
Refusal = tuple[int, str]


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


def tls_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """A server-side TLS context; with ``ca``, peers must present a certificate
    signed by it (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    if ca:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def accession_number(syntax: str, fragments: list[memoryview]) -> str:
    """The Accession Number of a received dataset (the fragments it arrived in),
    read from its header only."""
    syntax = UID(syntax)
    if syntax.is_little_endian and syntax != DeflatedExplicitVRLittleEndian:
        # Nearly always within the first fragment; the whole dataset otherwise.
        found = rawdicom.find_accession(fragments[0], implicit=syntax.is_implicit_VR)
        if found is None or (found == "" and len(fragments) > 1):
            found = rawdicom.find_accession(
                b"".join(fragments), implicit=syntax.is_implicit_VR
            )
        if found is not None:
            return found
    data = b"".join(fragments)
    if syntax == DeflatedExplicitVRLittleEndian:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    header = read_dataset(
        BytesIO(data),
        syntax.is_implicit_VR,
        syntax.is_little_endian,
        stop_when=lambda tag, vr, length: tag > _ACCESSION_NUMBER,
    )
    return str(header.get("AccessionNumber", "") or "").strip()


def part10_prefix(sop_class_uid: str, sop_instance_uid: str, syntax: str) -> bytes:
    """What goes in front of a received dataset to make it a Part 10 file: the
    preamble, prefix and file meta (the dataset's bytes follow as the peer sent
    them)."""
    return _PREAMBLE + rawdicom.file_meta(sop_class_uid, sop_instance_uid, syntax)


class _Socket(AssociationSocket):
    """pynetdicom's socket, changed in two ways for a peer that sends one object
    after another and waits for each response (storescu, most PACS).

    ``recv`` reads a PDU straight into one buffer: pynetdicom's reads 4 kB per call
    and appends, 128 calls for each slice of a CT.

    ``ready`` waits: the association's DUL thread asks it whether data has arrived,
    and when neither data nor anything to send is there, sleeps and asks again.
    Here it waits up to ``IDLE_WAIT_SECONDS`` on the socket and on a pipe that
    ``wake`` writes to when the association queues something to send (its
    ``to_provider_queue`` is a :class:`_WakingQueue`), so the thread answers data
    and responses at once instead of one sleep later, and spins no more while idle.
    """

    def prepare(self) -> None:
        self._wake_lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = self.socket.recv_into(view[received:])
            if not count:  # the connection broke: what arrived, as pynetdicom does
                del view
                del buffer[received:]
                break
            received += count
        return buffer

    @property
    def ready(self) -> bool:
        """Whether data waits, after waiting up to ``IDLE_WAIT_SECONDS`` for it
        or for ``wake``."""
        return self._readable(IDLE_WAIT_SECONDS)

    def readable_now(self) -> bool:
        """Whether data waits to be read, without waiting for any."""
        return self._readable(0)

    def _readable(self, timeout: float) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes wait in the TLS layer, unseen by select
        try:
            readable, _, _ = select.select([sock, self._wake_read], [], [], timeout)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        if self._wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)
        return sock in readable

    def wake(self) -> None:
        with self._wake_lock:
            if self._wake_write is not None:
                with contextlib.suppress(BlockingIOError):  # full: awake anyway
                    os.write(self._wake_write, b"\x00")

    def release_wake(self) -> None:
        """Close the pipe, once the DUL thread (its only reader) has ended."""
        with self._wake_lock:
            if self._wake_write is not None:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = None


class _WakingQueue(queue.Queue):
    """The DUL's queue of primitives to send; each ``put`` wakes the DUL thread."""

    def __init__(self, wake) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item, block=True, timeout=None) -> None:
        super().put(item, block, timeout)
        self._wake()


def _streamline(assoc, serve) -> _Socket:
    """Make an association cheaper to serve, object after object.

    A peer that waits for each response (storescu, most PACS) pays every cost of
    ours once per object. pynetdicom's DUL thread sleeps whenever it finds nothing
    to do, and the association's thread sleeps 1 ms before each look for a received
    message; here the DUL thread waits in ``_Socket.ready`` and the association's
    thread on its queue of received messages, each woken the moment there is
    something for it. Data PDUs go from the socket to the receiver without
    pynetdicom's decoding (:class:`_PduReader`), and C-STORE requests are served,
    and answered, on the DUL thread itself (:class:`_StoreReceiver`). Done before
    the association starts: nothing is queued yet (what might be is moved
    anyway)."""
    dul = assoc.dul
    sock = dul.socket
    sock.__class__ = _Socket
    sock.prepare()
    waking = _WakingQueue(sock.wake)
    waking.queue.extend(dul.to_provider_queue.queue)
    dul.to_provider_queue = waking
    dul._run_loop_delay = 0  # the wait is in _Socket.ready
    dimse = assoc.dimse
    take_message = dimse.get_msg

    def get_msg(block: bool = False):
        if block:
            return take_message(block=True)
        try:
            return dimse.msg_queue.get(timeout=IDLE_WAIT_SECONDS)
        except queue.Empty:
            return None, None

    dimse.get_msg = get_msg
    receiver = _StoreReceiver(assoc, dimse.receive_primitive, serve)
    dimse.receive_primitive = receiver
    dul._read_pdu_data = _PduReader(dul, receiver)
    return sock


_PDU_HEADER = struct.Struct(">BBL")
_PDV_LENGTH = struct.Struct(">L")
_P_DATA_TF = 0x04
#: The largest PDU read is what we let peers send (``maximum_pdu_size``), and
#: never less than this (an association request proposing many contexts).
_PDU_FLOOR = 1024 * 1024
#: What pynetdicom tells handlers of, PDU by PDU (none are bound by the listener).
_PDU_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)


class _PduReader:
    """The DUL thread's read of one PDU (``DULServiceProvider._read_pdu_data``),
    P-DATA-TF PDUs of an established association handed straight to the
    :class:`_StoreReceiver`.

    A peer sends each object in PDUs of at most its own limit (dcmtk 128 kB, many
    PACS 16 kB), 5 to 32 for a CT slice. pynetdicom copies each PDU three times
    (joining its header and body, into ``bytes``, into each presentation data
    value), queues an event for its state machine and builds a primitive, whose
    only action in Sta6 (DT-2) is to give the values to the DIMSE provider: the
    receiver. Here the body is read into one buffer and the values are views on
    it. Anything else (another PDU type, another state, an event queued before
    this PDU, a handler bound to the events skipped) is pynetdicom's, as read
    by it; a P-DATA-TF whose items do not fill it exactly is an invalid PDU
    (Evt19: the association is aborted), as pynetdicom would judge it. So is a
    PDU longer than we let peers send: its buffer is never allocated.
    """

    def __init__(self, dul, receiver: _StoreReceiver) -> None:
        self.dul = dul
        self.receiver = receiver
        assoc = dul.assoc
        self.observed = any(assoc.get_handlers(event) for event in _PDU_EVENTS)
        limit = assoc.ae.maximum_pdu_size  # 0: no limit
        self.limit = max(limit, _PDU_FLOOR) if limit else None

    def __call__(self) -> None:
        """Read a PDU; while they are data PDUs for the receiver and the next one
        is already waiting (nothing waiting to be sent), read that one too. A
        peer sends an object's PDUs back to back: between two of them the
        reactor would otherwise sleep, giving the interpreter to the other
        threads, and take it back only at their leisure."""
        while self._read() and self._next_waiting():
            pass

    def _next_waiting(self) -> bool:
        dul = self.dul
        return (
            not dul.to_provider_queue.queue
            and not dul._kill_thread
            and dul.socket.readable_now()
        )

    def _read(self) -> bool:
        """Read one PDU: True if it was a data PDU served here."""
        dul = self.dul
        try:
            header = dul.socket.recv(6)
            if len(header) < 6:
                dul.event_queue.put("Evt17")  # the connection closed
                return False
            kind, _, length = _PDU_HEADER.unpack(header)
            if not 0x01 <= kind <= 0x07:
                logger.warning("unknown PDU type 0x%02X received", kind)
                dul.event_queue.put("Evt19")
                return False
            if self.limit is not None and length > self.limit:
                logger.warning(
                    "PDU of %d bytes from %s: longer than allowed, aborted",
                    length,
                    _calling(dul.assoc),
                )
                dul.event_queue.put("Evt19")
                return False
            body = dul.socket.recv(length)
        except (OSError, TimeoutError):
            dul.event_queue.put("Evt17")
            return False
        if len(body) != length:
            dul.event_queue.put("Evt17")  # closed part-way through the PDU
            return False
        if (
            kind == _P_DATA_TF
            and not self.observed
            and dul.state_machine.current_state == "Sta6"
            and dul.event_queue.empty()
        ):
            values = presentation_data_values(body)
            if values is None:
                logger.warning("invalid P-DATA-TF from %s", _calling(dul.assoc))
                dul.event_queue.put("Evt19")
                return False
            self.receiver.receive(values)
            return True
        try:
            pdu, event = dul._decode_pdu(header + body)
        except Exception:
            logger.warning("undecodable PDU from %s", _calling(dul.assoc))
            dul.event_queue.put("Evt19")
            return False
        dul.event_queue.put(event)
        dul._recv_pdu.put(pdu)
        return False


def presentation_data_values(body) -> list[tuple[int, memoryview]] | None:
    """The presentation data value items of a P-DATA-TF PDU's body (PS3.8
    9.3.5.1) as (context ID, value) pairs, each value a view on ``body`` starting
    with its message control header; None unless the items fill it exactly."""
    view = memoryview(body)
    values = []
    at, end = 0, len(view)
    while at < end:
        if at + 4 > end:
            return None
        (length,) = _PDV_LENGTH.unpack_from(view, at)
        start, at = at + 4, at + 4 + length
        if length < 2 or at > end:
            return None
        values.append((view[start], view[start + 1 : at]))
    return values or None


class _StoreReceiver:
    """C-STORE requests served on the association's DUL thread as they arrive.

    pynetdicom assembles a message in its DIMSE provider (copying the data set
    twice), decodes the command set with pydicom, queues the request for the
    association's thread, which calls the handler, builds and encodes the
    response and queues it back for the DUL thread to send: about a millisecond
    of CPU and two thread switches an object, for a peer that waits for each
    response. Here the presentation data values of a C-STORE request are kept as
    they arrive (views on the received PDUs), its command set is read by
    ``rawdicom``, ``serve`` stores the object on this thread and the response
    goes out from here, as the DUL's own P-DATA would (state Sta6 throughout).

    Anything else (C-ECHO, a command this cannot read, a request on a context
    or of a SOP class not accepted for storage, whatever follows a message that
    pynetdicom is part-way through) goes to pynetdicom as before.
    """

    def __init__(self, assoc, forward, serve) -> None:
        self.assoc = assoc
        self.forward = forward  # pynetdicom's DIMSEServiceProvider.receive_primitive
        self.serve = serve
        self.command = bytearray()
        self.request: rawdicom.StoreRequest | None = None
        self.context_id = 0
        self.fragments: list[memoryview] = []

    def __call__(self, primitive: P_DATA) -> None:
        """A P-DATA primitive from pynetdicom's state machine."""
        self.receive(primitive.presentation_data_value_list)

    def receive(self, values) -> None:
        """The presentation data values of a P-DATA-TF PDU, in order: (context ID,
        message control header and fragment)."""
        for context_id, data in values:
            control = data[0]
            if self.assoc.dimse.message is not None:  # pynetdicom's message
                self._forward(context_id, data)
            elif self.request is not None:
                self._data_set(context_id, control, data)
            elif control & 1:
                self._command(context_id, control, data)
            else:  # a data set with no command before it: pynetdicom's to judge
                self._forward(context_id, data)

    def _command(self, context_id: int, control: int, data) -> None:
        self.command += data[1:]
        if not control & 2:
            return
        command, self.command = bytes(self.command), bytearray()
        request = rawdicom.store_request(command)
        context = self.assoc._accepted_cx.get(context_id)
        if (
            request is None
            or not request.has_dataset
            or context is None
            or context.abstract_syntax != request.sop_class_uid
            or request.sop_class_uid not in STORAGE_SOP_CLASSES
        ):
            self._forward(context_id, b"\x03" + command)
            return
        self.request, self.context_id, self.fragments = request, context_id, []

    def _data_set(self, context_id: int, control: int, data) -> None:
        if control & 1 or context_id != self.context_id:
            # A command, or another context, before the data set ended.
            logger.warning("malformed C-STORE from %s: aborted", _calling(self.assoc))
            self.request = None
            self.assoc.abort()
            return
        self.fragments.append(memoryview(data)[1:])
        if not control & 2:
            return
        request, fragments = self.request, self.fragments
        self.request, self.fragments = None, []
        context = self.assoc._accepted_cx[context_id]
        try:
            status, comment = self.serve(
                self.assoc, request, context.transfer_syntax[0], fragments
            )
        except Exception:
            logger.exception("C-STORE from %s failed", _calling(self.assoc))
            status, comment = PROCESSING_FAILURE, "The object could not be processed"
        response = rawdicom.store_response(
            request.message_id,
            request.sop_class_uid,
            request.sop_instance_uid,
            status,
            comment,
        )
        self.assoc.dul.socket.send(rawdicom.command_pdu(context_id, response))

    def _forward(self, context_id: int, data) -> None:
        primitive = P_DATA()
        primitive.presentation_data_value_list = [[context_id, bytes(data)]]
        self.forward(primitive)


def _calling(assoc) -> str:
    """The peer's calling AE title, once its association request has arrived."""
    request = assoc.requestor.primitive
    if request is None:
        return "a peer not yet associated"
    return str(request.calling_ae_title).strip()


class _NoDelayServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on every accepted connection: peers built on dcmtk stall on
    delayed ACKs otherwise (200 slices in seconds instead of a fraction of one)."""

    def get_request(self):
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


@dataclass
class _Batch:
    """The objects of one case staged for one ingest job, in files of at most
    ``part_size`` records each.

    A batch that fills goes to the ingest as one job. The last batch of an
    association goes as one job per file: by then the worker has caught up with
    the earlier batches, and the last one is what the study's judgement waits
    for, so two jobs of 25 objects on two worker processes end sooner than one
    of 50 on one (their evaluation waits for both)."""

    case: Case
    part_size: int
    paths: list[str] = field(default_factory=list)  # staged objects' references
    started: float = field(default_factory=time.monotonic)
    # What the sender said of its study (``services.ingest_enqueue``): False while
    # the association is open (more is coming); True for the last batch of a
    # released association (judge it as soon as the batches are in); None after an
    # abort (judge it once it has been quiet). A last batch may be empty: the one
    # before it waited too long and was handed over already.
    complete: bool | None = False
    # Where each file's references start in ``paths``, the current file's last.
    parts: list[int] = field(default_factory=lambda: [0])
    staged: staging.StagedBatch = field(init=False)

    def __post_init__(self) -> None:
        self.staged = staging.StagedBatch(self.case.id)

    def stage(self, chunks: list) -> str:
        """Stage one object (raises OSError if it could not be): its reference,
        in a new file once the current one holds ``part_size`` objects."""
        if len(self.paths) - self.parts[-1] >= self.part_size:
            self.staged.close()
            self.staged = staging.StagedBatch(self.case.id)
            self.parts.append(len(self.paths))
        reference = self.staged.add(chunks)
        self.paths.append(reference)
        return reference

    def jobs(self) -> list[list[str]]:
        """The references each ingest job takes: all in one, or for the last
        batch of an association one job per file."""
        if self.complete is False:
            return [self.paths] if self.paths else []
        bounds = [*self.parts, len(self.paths)]
        jobs = [self.paths[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        return jobs or [[]]  # an empty last batch still says the study is complete


@dataclass
class _Session:
    """What one association has learnt and staged so far."""

    ae_title: str
    hospital_id: int
    # accession number -> (case, None) or (None, refusal status)
    routes: dict[str, tuple[Case | None, Refusal | None]] = field(default_factory=dict)
    batches: dict[int, _Batch] = field(default_factory=dict)
    cases: dict[int, Case] = field(default_factory=dict)  # every case sent to
    received: int = 0
    refused: int = 0
    # Guards batches and cases: an object is staged into its batch under it, so a
    # batch is never handed over (flush_stale, on another thread) mid-write.
    lock: threading.Lock = field(default_factory=threading.Lock)


class Listener:
    """The C-STORE listener. ``start()`` serves in background threads; ``stop()``
    stops accepting, lets running associations finish (up to ``grace`` seconds),
    aborts the rest and hands every staged object to the ingest."""

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        ae_title: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        batch_size: int | None = None,
        batch_seconds: float | None = None,
        max_associations: int | None = None,
        acse_timeout: float | None = None,
        network_timeout: float | None = None,
    ) -> None:
        self.host = host if host is not None else settings.PSI_DICOM_HOST
        self.port = port if port is not None else settings.PSI_DICOM_PORT
        self.ae_title = ae_title or settings.PSI_DICOM_AE_TITLE
        self.ssl_context = ssl_context
        self.batch_size = max(1, batch_size or settings.PSI_DICOM_BATCH_SIZE)
        # Objects per staged file: a batch is two files (see _Batch).
        self.part_size = max(1, (self.batch_size + 1) // 2)
        self.batch_seconds = (
            batch_seconds
            if batch_seconds is not None
            else settings.PSI_DICOM_BATCH_SECONDS
        )
        self._lock = threading.Lock()
        self._sessions: dict[object, _Session] = {}
        self._server: ThreadedAssociationServer | None = None
        # Batches go to the ingest from one thread of their own, in arrival order:
        # with eager Celery (the embedded mode) the ingest runs right there, and a
        # peer must not wait for it between two C-STOREs.
        self._handover: queue.Queue[tuple[str, _Batch] | None] = queue.Queue()
        self._handover_thread = threading.Thread(
            target=self._hand_over_forever, name="dicom-ingest-handover", daemon=True
        )
        self.ae = AE(ae_title=self.ae_title)
        # pynetdicom's defaults (10 associations, 30 s to negotiate) let a handful
        # of silent or garbage connections (a port scan) turn hospitals away.
        self.ae.maximum_associations = (
            max_associations or settings.PSI_DICOM_MAX_ASSOCIATIONS
        )
        self.ae.acse_timeout = acse_timeout or settings.PSI_DICOM_ACSE_TIMEOUT
        self.ae.network_timeout = network_timeout or settings.PSI_DICOM_NETWORK_TIMEOUT
        # The called AE title must be ours (A-ASSOCIATE-RJ, diagnostic 7, otherwise).
        self.ae.require_called_aet = True
        # Peers send PDUs up to our limit: pynetdicom's 16 kB default cuts a 512 x 512
        # slice into 32 of them (200 slices took 3.6 s here, with 1 MiB 2.0 s).
        self.ae.maximum_pdu_size = 1024 * 1024
        self.ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when started on port 0)."""
        if self._server is None:
            return (self.host, self.port)
        return self._server.server_address[:2]

    def start(self) -> None:
        # pynetdicom's standard handlers log every PDU and DIMSE message, which
        # costs a tenth of the receive time; associations, refusals and what was
        # stored are logged here instead.
        _config.LOG_HANDLER_LEVEL = "none"
        # Before the first batch is handed over, not during the first transfer.
        jobs.jobs_prepare()
        self._server = self.ae.make_server(
            (self.host, self.port),
            ae_title=self.ae_title,
            ssl_context=self.ssl_context,
            evt_handlers=[
                (evt.EVT_CONN_OPEN, self._on_open),
                (evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_C_ECHO, self._on_echo),
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_RELEASED, self._on_released),
                (evt.EVT_ABORTED, self._on_end),
            ],
            server_class=_NoDelayServer,
        )
        # As AE.start_server does: the server's shutdown() takes itself off this list.
        self.ae._servers.append(self._server)
        self._handover_thread.start()
        threading.Thread(
            target=self._server.serve_forever,
            name="dicom-listener",
            daemon=True,
        ).start()
        logger.info(
            "DICOM listener %s on %s:%s%s",
            self.ae_title,
            *self.address,
            " (TLS)" if self.ssl_context else "",
        )

    def stop(self, grace: float = 10.0) -> None:
        if self._server is not None:
            self._server.shutdown()
        deadline = time.monotonic() + grace
        while self.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            assoc.abort()
        for assoc in self.ae.active_associations:
            assoc.join(timeout=5)
        self.flush_all()
        if self._handover_thread.is_alive():
            self._handover.put(None)
            self._handover_thread.join()
        close_old_connections()
        logger.info("DICOM listener %s stopped", self.ae_title)

    # -- batching -------------------------------------------------------------------

    def flush_stale(self) -> None:
        """Hand over batches that have waited ``batch_seconds`` (called
        periodically while associations stay open)."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            with session.lock:
                due = [
                    case_id
                    for case_id, batch in session.batches.items()
                    if now - batch.started >= self.batch_seconds
                ]
            for case_id in due:
                self._flush(session, case_id)

    def flush_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            self._flush_session(session, complete=None)

    def _flush_session(self, session: _Session, *, complete: bool | None) -> None:
        """The association ended: every case it sent to gets its last batch."""
        with session.lock:
            case_ids = list(session.cases)
        for case_id in case_ids:
            self._flush(session, case_id, complete=complete)

    def drain(self) -> None:
        """Wait until every batch handed over so far has reached the ingest."""
        self._handover.join()

    def _flush(
        self, session: _Session, case_id: int, *, complete: bool | None = False
    ) -> None:
        with session.lock:
            batch = session.batches.pop(case_id, None)
            case = session.cases[case_id]
        if batch is not None:
            batch.staged.close()
        if complete is not False:
            batch = batch or _Batch(case=case, part_size=self.part_size)
            batch.complete = complete
        if batch is not None:
            self._handover.put((session.ae_title, batch))

    def _hand_over_forever(self) -> None:
        try:
            while (item := self._handover.get()) is not None:
                try:
                    close_old_connections()
                    self._hand_over(*item)
                finally:
                    self._handover.task_done()
        finally:
            connection.close()

    def _hand_over(self, ae_title: str, batch: _Batch) -> None:
        try:
            # The jobs of a batch commit together: none is judged without the rest.
            with transaction.atomic():
                for paths in batch.jobs():
                    services.ingest_enqueue(
                        actor=None,
                        case=batch.case,
                        paths=paths,
                        source="cstore",
                        calling_ae_title=ae_title,
                        complete=batch.complete,
                    )
        except (ConsentMissing, Conflict):
            # Consent withdrawn or the case moved on since the objects arrived: the
            # raw files carry identity we may no longer hold.
            staging.unstage(batch.paths)
            logger.warning(
                "%d staged objects for %s from %s dropped: the case refused them",
                len(batch.paths),
                batch.case.reference,
                ae_title,
            )
            return
        except Exception:
            # The files stay staged; the peer was already told they were stored.
            logger.exception(
                "ingest of %d staged objects for %s from %s could not be enqueued",
                len(batch.paths),
                batch.case.reference,
                ae_title,
            )
            return
        logger.info(
            "%d objects for %s from %s handed to the ingest",
            len(batch.paths),
            batch.case.reference,
            ae_title,
        )

    # -- event handlers (each runs in the association's thread) ---------------------

    def _on_open(self, event) -> None:
        assoc = event.assoc
        dul = assoc.dul
        sock = _streamline(assoc, self._serve)
        # Django's connections are per thread: the association's thread closes its
        # own when it ends, however it ends (release, abort, dropped connection).
        run = assoc.run

        def run_then_clean_up() -> None:
            try:
                run()
            finally:
                self._end(assoc)
                connection.close()
                dul.join(timeout=5)
                if not dul.is_alive():
                    sock.release_wake()

        assoc.run = run_then_clean_up

    def _on_requested(self, event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        try:
            hospital_id = services.dicom_peer_admit(calling, assoc.requestor.address)
        except PermissionRefused as refusal:
            logger.warning("association rejected: %s", refusal.message)
            # Rejected permanent, by the service user: calling AE title not recognised.
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()
            return
        with self._lock:
            self._sessions[assoc] = _Session(ae_title=calling, hospital_id=hospital_id)

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int | Dataset:
        """A C-STORE that pynetdicom delivered (the DUL thread serves most)."""
        request = event.request
        status, comment = self._serve(
            event.assoc,
            rawdicom.StoreRequest(
                message_id=request.MessageID,
                sop_class_uid=request.AffectedSOPClassUID,
                sop_instance_uid=request.AffectedSOPInstanceUID,
                has_dataset=True,
            ),
            event.context.transfer_syntax,
            [request.DataSet.getbuffer()],
        )
        return SUCCESS if status == SUCCESS else _status(status, comment)

    def _serve(
        self,
        assoc,
        request: rawdicom.StoreRequest,
        syntax: str,
        fragments: list[memoryview],
    ) -> tuple[int, str]:
        """Route, stage and batch one received object: its status and comment."""
        with self._lock:
            session = self._sessions.get(assoc)
        if session is None:  # not reachable: unknown callers never associate
            return PROCESSING_FAILURE, "Unknown calling AE title"
        try:
            accession = accession_number(syntax, fragments)
        except Exception:
            session.refused += 1
            return UNREADABLE, "Dataset header could not be read"
        case, refusal = self._route(session, accession)
        if refusal is not None:
            session.refused += 1
            return refusal
        prefix = part10_prefix(request.sop_class_uid, request.sop_instance_uid, syntax)
        with session.lock:
            # A full batch goes to the ingest when the next object arrives: the
            # last batch of an association then goes with the word that the study
            # is complete, instead of an empty job behind it.
            full = session.batches.get(case.id)
            if full is not None and len(full.paths) >= self.batch_size:
                del session.batches[case.id]
                full.staged.close()
            else:
                full = None
            batch = session.batches.get(case.id)
            if batch is None:
                batch = session.batches[case.id] = _Batch(
                    case=case, part_size=self.part_size
                )
            try:
                batch.stage([prefix, *fragments])
            except OSError:
                logger.exception("staging failed for %s", case.reference)
                status = OUT_OF_RESOURCES, "Could not store the object"
                if not batch.paths:
                    del session.batches[case.id]
                    batch.staged.close()
            else:
                session.cases[case.id] = case
                session.received += 1
                status = SUCCESS, ""
        if full is not None:
            self._handover.put((session.ae_title, full))
        return status

    def _route(
        self, session: _Session, accession: str
    ) -> tuple[Case | None, Refusal | None]:
        if accession not in session.routes:
            session.routes[accession] = self._find_case(session, accession)
        return session.routes[accession]

    def _find_case(
        self, session: _Session, accession: str
    ) -> tuple[Case | None, Refusal | None]:
        case = services.case_for_accession(accession) if accession else None
        # A case of another hospital is answered exactly like no case at all.
        if case is None or case.hospital_id != session.hospital_id:
            logger.warning("objects from %s match no case of theirs", session.ae_title)
            return None, (NO_CASE, "No case matches the Accession Number")
        try:
            services.imaging_gate(case)
        except ConsentMissing:
            logger.warning("imaging for %s refused: no consent", case.reference)
            return None, (REFUSED, "No consent covers imaging for this case")
        except Conflict:
            logger.warning("imaging for %s refused: case state", case.reference)
            return None, (REFUSED, "The case accepts no imaging in its state")
        return case, None

    def _on_released(self, event) -> None:
        self._end(event.assoc, complete=True)

    def _on_end(self, event) -> None:
        self._end(event.assoc)

    def _end(self, assoc, *, complete: bool | None = None) -> None:
        """Hand over what the association staged. Only a release says the sender
        finished; after an abort or a dropped connection the study is judged once
        it has been quiet for a while (it may be sent again)."""
        with self._lock:
            session = self._sessions.pop(assoc, None)
        if session is None:
            return
        self._flush_session(session, complete=complete)
        if session.received or session.refused:
            logger.info(
                "association from %s ended: %d objects stored, %d refused",
                session.ae_title,
                session.received,
                session.refused,
            )
