"""DICOMweb (PS3.18) for the imaging exchange: STOW-RS to send a study for a case,
QIDO-RS to search the de-identified studies one may see, WADO-RS to retrieve them.

STOW-RS reads the ``multipart/related`` body in chunks and writes each part straight
to the staging folder (``stage_chunks``), so no request is held whole in memory. The
target case is the instance's Accession Number, equal to the case reference, unless
the ``X-PSI-Case: <reference>`` header names it. The sender needs the same rights as
for the REST upload, and the case must pass the consent and case gate; accepted parts
go to the ingest job (``ingest_enqueue``).

The Referenced SOP Sequence names the instances accepted for ingest under the UIDs
the sender used (the sender matches them); their Retrieve URLs point at where the
de-identified objects appear once the ingest has stored them: QIDO and WADO only know
de-identified UIDs and values.

Clients authenticate with a token (``Authorization: Token <key>``); a browser
session is accepted for reads only (the views are CSRF-exempt, so writes need the
token). Invisible studies answer 404, as missing ones do.

Modules: ``views`` (the routed views, thin); ``stow``, ``qido`` and ``wado`` (one
transaction each); ``query`` (QIDO-RS query parameters and matching); ``syntax``
(WADO-RS transfer syntax negotiation); ``multipart`` (the streaming
``multipart/related`` reader and writer); ``common`` (responses, authentication,
DICOM JSON helpers).
"""
