"""Transfer syntax negotiation for WADO-RS (PS3.18 §8.7.3, §8.7.5).

The user agent names what it accepts: ``multipart/related; type="application/dicom"``
with an optional ``transfer-syntax`` parameter, ``*`` for "as the server has it".
Without the parameter the answer is in the default for web services, Explicit VR
Little Endian (§8.7.3.4), except for objects held only in a lossy compressed form,
which go as they are (the exception the same section makes). Implicit VR Little
Endian and Explicit VR Big Endian are never used with web services (§8.7.3).

What this server can produce without touching the pixel bytes: an object as it is
stored, and Explicit VR Little Endian from any native little-endian encoding
(Implicit VR, Explicit VR, Deflated), which re-encodes the header only. Pixel data
are never decompressed or compressed here, so nothing is ever re-encoded lossy; what
cannot be produced that way is answered 406 with the reason.
"""

from __future__ import annotations

import io
import re

import pydicom
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    MPEGTransferSyntaxes,
)

DEFAULT = ExplicitVRLittleEndian
AS_STORED = "*"

#: Native little-endian encodings: re-encoded as Explicit VR Little Endian, the
#: pixel bytes copied as they are.
_NATIVE_LE = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
#: Never used with web services (PS3.18 §8.7.3).
_NOT_FOR_WEB = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian})
#: Syntaxes that only carry lossy pixel data.
_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, *MPEGTransferSyntaxes})

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


class NotAcceptable(Exception):
    """Nothing the user agent accepts can be produced; the text says why."""


class BadAccept(Exception):
    """The Accept header names a malformed transfer syntax."""


def _name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _split(text: str, separator: str) -> list[str]:
    """``text`` cut at each ``separator`` outside a quoted string (RFC 9110 §5.6)."""
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def accepted_syntaxes(accept: str) -> list[str | None]:
    """The transfer syntaxes the ``Accept`` header asks for, most wanted first:
    a UID, ``"*"``, or None for "not named" (the default).

    Raises NotAcceptable when no media range admits ``application/dicom`` in
    ``multipart/related``, BadAccept when a transfer syntax is not a UID."""
    if not accept.strip():
        return [None]
    ranked: list[tuple[float, int, str | None]] = []
    for order, media_range in enumerate(_split(accept, ",")):
        media_type, *raw_params = _split(media_range, ";")
        params = {}
        for raw in raw_params:
            name, _, value = raw.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", 1))
        except ValueError:
            quality = 1.0
        media_type = media_type.lower()
        if media_type in ("*/*", "multipart/*"):
            syntax = None
        elif media_type == "multipart/related" and params.get(
            "type", "application/dicom"
        ).lower() in ("application/dicom", "application/*", "*/*"):
            syntax = params.get("transfer-syntax") or None
            if syntax not in (None, AS_STORED) and not _UID.fullmatch(syntax):
                raise BadAccept("transfer-syntax must be a UID or *.")
        else:
            continue
        if quality > 0:
            ranked.append((-quality, order, syntax))
    if not ranked:
        raise NotAcceptable(
            "Studies, series and instances are sent as multipart/related; "
            'type="application/dicom".'
        )
    return [syntax for *_, syntax in sorted(ranked)]


def selected_syntax(stored: str, requested: str | None) -> str:
    """The transfer syntax an object stored in ``stored`` is sent in when the user
    agent asks for ``requested``; NotAcceptable if it cannot be produced."""
    if requested in _NOT_FOR_WEB:
        raise NotAcceptable(
            f"{_name(requested)} is not used with DICOM web services (PS3.18 "
            "8.7.3); ask for Explicit VR Little Endian."
        )
    if stored in _NATIVE_LE:
        # As stored where web services allow it, and re-encoded in the default.
        producible = [stored] if stored not in _NOT_FOR_WEB else []
        producible += [DEFAULT] if stored != DEFAULT else []
    elif stored in _NOT_FOR_WEB:
        raise NotAcceptable(
            f"An object is stored in {_name(stored)}, which cannot be sent "
            "without re-encoding its pixel data."
        )
    else:
        producible = [stored]
    if requested == AS_STORED:
        return producible[0]
    if requested in producible:
        return requested
    if requested is None:
        if DEFAULT in producible:
            return DEFAULT
        if stored in _LOSSY:
            return stored  # held only in lossy form: sent as it is (8.7.3.4)
    wanted = _name(requested or DEFAULT)
    if DEFAULT in producible:
        raise NotAcceptable(
            f"{wanted} cannot be produced: objects stored uncompressed are sent "
            f"in {_name(DEFAULT)} or as stored."
        )
    raise NotAcceptable(
        f"An object is stored in {_name(stored)} and is sent only as it is "
        f"(transfer-syntax={stored} or *): its pixel data are never re-encoded, "
        f"so {wanted} cannot be produced."
    )


def negotiate(accept: str, stored: list[str]) -> list[str]:
    """The transfer syntax of each object, for the first acceptable choice of
    the user agent that every object can be sent in (one answer is one choice).

    Raises NotAcceptable with the reason of the most wanted choice, or BadAccept."""
    first_refusal: NotAcceptable | None = None
    for requested in accepted_syntaxes(accept):
        try:
            return [selected_syntax(s, requested) for s in stored]
        except NotAcceptable as refusal:
            first_refusal = first_refusal or refusal
    assert first_refusal is not None
    raise first_refusal


def transcoded(handle, syntax: str) -> io.BytesIO:
    """The object read from ``handle`` re-encoded in ``syntax`` (Explicit VR Little
    Endian): the header is rewritten, the pixel bytes are copied unchanged."""
    ds = pydicom.dcmread(handle)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    out.seek(0)
    return out
