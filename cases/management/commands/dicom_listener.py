"""Run the DICOM C-STORE listener until SIGTERM or SIGINT (then finish cleanly: stop
accepting, let running transfers end, hand every staged object to the ingest)."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cases.imaging.listener import Listener, tls_context
from psi.database import keep_connections


class Command(BaseCommand):
    help = "Receive DICOM studies from hospital PACS (C-STORE, C-ECHO)."

    def add_arguments(self, parser):
        parser.add_argument("--host", help="Address to listen on (PSI_DICOM_HOST)")
        parser.add_argument("--port", type=int, help="TCP port (PSI_DICOM_PORT)")
        parser.add_argument("--ae-title", help="Our AE title (PSI_DICOM_AE_TITLE)")
        parser.add_argument("--tls-cert", help="PEM certificate (PSI_DICOM_TLS_CERT)")
        parser.add_argument("--tls-key", help="PEM private key (PSI_DICOM_TLS_KEY)")
        parser.add_argument(
            "--tls-ca",
            help="CA the peers' certificates must chain to (PSI_DICOM_TLS_CA)",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=10.0,
            help="Seconds running transfers get to finish on shutdown",
        )

    def handle(self, *args, **options):
        cert = options["tls_cert"] or settings.PSI_DICOM_TLS_CERT
        key = options["tls_key"] or settings.PSI_DICOM_TLS_KEY
        ca = options["tls_ca"] or settings.PSI_DICOM_TLS_CA
        if bool(cert) != bool(key) or (ca and not cert):
            raise CommandError("TLS needs both a certificate and its key.")
        try:
            context = tls_context(cert, key, ca) if cert else None
        except OSError as error:
            raise CommandError(f"TLS files could not be read: {error}") from None
        # The hand-over thread enqueues a batch every few hundred milliseconds
        # while a study arrives: one connection for all of them.
        keep_connections()
        listener = Listener(
            host=options["host"],
            port=options["port"],
            ae_title=options["ae_title"],
            ssl_context=context,
        )
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            listener.start()
        except OSError as error:
            raise CommandError(f"Cannot listen: {error}") from None
        host, port = listener.address
        self.stdout.write(f"DICOM listener {listener.ae_title} on {host}:{port}")
        self.stdout.flush()
        # Batches of associations that stay open are handed over from here.
        while not stop.wait(1.0):
            listener.flush_stale()
        self.stdout.write("Stopping: finishing running transfers")
        listener.stop(grace=options["grace"])
