"""Load the demo data set: two hospitals, a manufacturer, a user for every role,
synthetic patients with consent and cases in several states. Idempotent."""

import datetime
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from pydicom.uid import generate_uid

from cases import services as case_services
from cases.imaging import quality
from cases.imaging.models import DicomPeer, ImagingStudy
from cases.imaging.phantom import spec_passing, write_series
from cases.imaging.services import (
    IMAGING_STATUSES,
    REVIEW_FINDINGS,
    ingest_enqueue,
    study_review_sign,
)
from cases.imaging.staging import stage_chunks
from cases.models import Case
from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.services import consent_record, patient_register
from psi.models import Organisation, Role
from psi.orgs import membership_grant, organisation_create

DEMO_PASSWORD = "psi-demo-password"

HOSPITAL_A = "Demo University Hospital"
HOSPITAL_B = "Demo County Hospital"
MANUFACTURER = "Demo Implants Ltd"
# The first hospital's PACS, calling from this machine: for trying the listener.
DEMO_PEER_AE_TITLE = "DEMO_PACS"
DEMO_PEER_NETWORKS = "127.0.0.1 ::1"

# username, organisation, role, first name, last name
PEOPLE = [
    ("surgeon", HOSPITAL_A, Role.CLINICIAN, "Alex", "Surgeon"),
    ("coordinator", HOSPITAL_A, Role.CASE_COORDINATOR, "Casey", "Coordinator"),
    ("surgeon_b", HOSPITAL_B, Role.CLINICIAN, "Blair", "Surgeon"),
    ("coordinator_b", HOSPITAL_B, Role.CASE_COORDINATOR, "Bo", "Coordinator"),
    ("case_manager", MANUFACTURER, Role.CASE_MANAGER, "Morgan", "Manager"),
    ("designer", MANUFACTURER, Role.DESIGNER, "Dana", "Designer"),
    ("production", MANUFACTURER, Role.PRODUCTION, "Pat", "Production"),
    ("qa", MANUFACTURER, Role.QUALITY_ASSURANCE, "Quinn", "Assurance"),
    ("prrc", MANUFACTURER, Role.REGULATORY, "Robin", "Regulatory"),
    ("auditor", MANUFACTURER, Role.AUDITOR, "Avery", "Auditor"),
    ("integration", MANUFACTURER, Role.INTEGRATION, "Integration", "Client"),
]

# The steps that bring a case to each demo state, with who takes them.
ROUTE = [
    ("submit", "surgeon"),
    ("receive_imaging", "case_manager"),
    ("accept_imaging", "case_manager"),
    ("start_design", "designer"),
    ("request_review", "designer"),
    ("approve_design", "surgeon"),
    ("start_manufacturing", "production"),
    ("release", "qa"),
]
# Cases that go to design get a synthetic phantom study ingested and reviewed; they
# have the regions with the shortest coverage minima, so one small phantom serves all.
DEMO_CASES = [
    # (region, side, steps along ROUTE, then an optional final transition)
    ("cranial", "left", 0, None),
    ("pelvis", "right", 1, None),
    ("mandible", "left", 2, None),
    ("orbital", "right", 4, None),
    ("maxilla", "midline", 5, None),
    ("orbital", "left", 8, None),
    ("midface", "bilateral", 1, ("cancel", "surgeon")),
]
# Design needs an accepted study with a signed visual review (REGULATORY 50).
IMAGING_NEEDED_BY = "start_design"


DEMO_CASES_REGIONS = sorted(
    {
        region
        for region, _side, steps, _final in DEMO_CASES
        if IMAGING_NEEDED_BY in (name for name, _who in ROUTE[:steps])
    }
)


class _Phantom:
    """One synthetic CT series, written on first use, that passes the default
    acquisition profile of every region given."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: list[Path] | None = None

    def paths_for(self, regions) -> list[Path]:
        if self.paths is None:
            spec = spec_passing(
                (quality.default_profile(region) for region in regions), seed=2024
            )
            self.paths = write_series(self.folder, spec)
        return self.paths

    def files_for(self, scan: str, regions) -> Iterator[bytes]:
        """The series as one scan of its own: fresh study, series, frame and
        instance UIDs derived from ``scan`` (a study belongs to one case), the
        pixels untouched."""
        uids: dict[str, str] = {}

        def uid(old: str) -> str:
            if old not in uids:
                uids[old] = generate_uid(entropy_srcs=[scan, old])
            return uids[old]

        for path in self.paths_for(regions):
            ds = pydicom.dcmread(path)
            for keyword in (
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "FrameOfReferenceUID",
                "SOPInstanceUID",
            ):
                if keyword in ds:
                    setattr(ds, keyword, uid(getattr(ds, keyword)))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            yield buffer.getvalue()


class Command(BaseCommand):
    help = "Load the demo data set (idempotent) and print the demo logins."

    def handle(self, *args, **options):
        if Organisation.objects.filter(name=MANUFACTURER).exists():
            self.stdout.write("Demo organisations, people and patients already there.")
        else:
            with transaction.atomic():
                self._load()
        # Signing must run outside a transaction (a failed attempt stays recorded),
        # so the cases are moved along in a second, resumable pass.
        self._advance_cases()
        self._register_peer()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self._print_logins()
        self._print_peer()

    def _load(self):
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            admin = User.objects.create_superuser(
                "admin", "admin@example.test", DEMO_PASSWORD
            )
        orgs = {
            HOSPITAL_A: organisation_create(
                actor=admin,
                kind=Organisation.Kind.HOSPITAL,
                name=HOSPITAL_A,
                country="DE",
                address="1 Example Road, Exampletown",
            ),
            HOSPITAL_B: organisation_create(
                actor=admin,
                kind=Organisation.Kind.HOSPITAL,
                name=HOSPITAL_B,
                country="FR",
                address="2 Sample Street, Sampleville",
            ),
            MANUFACTURER: organisation_create(
                actor=admin,
                kind=Organisation.Kind.MANUFACTURER,
                name=MANUFACTURER,
                country="IE",
                address="3 Factory Lane, Demoford",
            ),
        }
        people = {}
        for username, org, role, first, last in PEOPLE:
            user = User.objects.create_user(
                username,
                f"{username}@example.test",
                DEMO_PASSWORD,
                first_name=first,
                last_name=last,
                is_staff=role != Role.INTEGRATION,
            )
            membership_grant(actor=admin, user=user, organisation=orgs[org], role=role)
            people[username] = user

        form = ConsentForm.objects.filter(title="PSI implant consent").first()
        if form is None:
            form = ConsentForm.objects.create(
                title="PSI implant consent",
                version="1.0",
                language="en",
                text=(
                    "I agree that my CT images and the data needed to design and "
                    "make my implant are shared with the manufacturer under a "
                    "pseudonym, and that the records the law requires are kept."
                ),
                purposes=list(Purpose.values),
                valid_from=datetime.date(2024, 1, 1),
            )
        for number, (region, side, steps, final) in enumerate(DEMO_CASES, start=1):
            hospital = orgs[HOSPITAL_A]
            patient = patient_register(
                actor=people["coordinator"],
                hospital=hospital,
                family_name=f"Demopatient{number}",
                given_names="Sample",
                birth_date=datetime.date(1960 + number, number, number),
                sex=[Patient.Sex.FEMALE, Patient.Sex.MALE][number % 2],
                record_number=f"DEMO-{number:04d}",
            )
            consent_record(
                actor=people["coordinator"],
                patient=patient,
                form=form,
                purposes={
                    Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
                    Purpose.DESIGN_AND_MANUFACTURE: LegalBasis.EXPLICIT_CONSENT,
                    Purpose.REGULATORY_RETENTION: LegalBasis.PUBLIC_HEALTH,
                },
                method=Consent.Method.ELECTRONIC,
                signed_at=timezone.now() - datetime.timedelta(days=30),
            )
            case = case_services.case_create(
                actor=people["surgeon"],
                patient=patient,
                manufacturer=orgs[MANUFACTURER],
                prescriber=people["surgeon"],
                indication=f"Demo indication {number}: bone defect after resection",
                anatomical_region=region,
                side=side,
                regulatory_pathway=Case.Pathway.EU_CUSTOM_MADE,
                pathway_reason="No CE-marked device fits this patient's anatomy.",
                planned_surgery_date=timezone.localdate()
                + datetime.timedelta(days=30 + number),
            )
            if steps or final:
                case_services.prescription_create(
                    actor=people["surgeon"],
                    case=case,
                    prescriber_licence="DEMO-LICENCE-001",
                    material="peek",
                    thickness_mm="4.0",
                    screw_count=6,
                    screw_positions="Three along each margin, 10 mm apart",
                    margins_mm="2.0",
                )

    def _advance_cases(self):
        people = {u.username: u for u in get_user_model().objects.all()}
        with tempfile.TemporaryDirectory(prefix="psi-demo-phantom-") as scratch:
            phantom = _Phantom(Path(scratch))
            for number, (_region, _side, steps, final) in enumerate(
                DEMO_CASES, start=1
            ):
                self._advance_case(number, steps, final, people, phantom)

    def _advance_case(self, number, steps, final, people, phantom):
        case = Case.objects.get(indication__startswith=f"Demo indication {number}:")
        prescription = case_services.prescription_latest(case)
        if prescription and not prescription.is_signed:
            case_services.prescription_sign(
                actor=people["surgeon"],
                prescription=prescription,
                password=DEMO_PASSWORD,
            )
        route = ROUTE[:steps]
        needs_imaging = IMAGING_NEEDED_BY in (name for name, _who in route)
        for name, who in route:
            if needs_imaging and name == "receive_imaging":
                case = self._send_imaging(case, people["coordinator"], phantom)
            if name == IMAGING_NEEDED_BY:
                self._review_imaging(case, people["designer"])
            if name in case_services.transitions_from(case.status):
                case = case_services.case_advance(
                    actor=people[who], case=case, transition=name, reason="demo"
                )
        if final and final[0] in case_services.transitions_from(case.status):
            name, who = final
            case_services.case_advance(
                actor=people[who],
                case=case,
                transition=name,
                reason="Demo: surgery no longer planned",
            )

    def _send_imaging(self, case, sender, phantom):
        """Upload the phantom study for a submitted case through the real ingest
        (Celery runs eagerly in the demo), unless the case already has one."""
        if case.status != Case.Status.SUBMITTED or case.studies.exists():
            return case
        staged = [
            str(stage_chunks(case.pk, [data]))
            for data in phantom.files_for(case.reference, DEMO_CASES_REGIONS)
        ]
        with transaction.atomic():
            ingest_enqueue(actor=sender, case=case, paths=staged, source="upload")
        case.refresh_from_db()
        self.stdout.write(f"Imaging ingested for {case.reference}.")
        return case

    def _review_imaging(self, case, designer):
        study = (
            case.studies.filter(status=ImagingStudy.Status.ACCEPTED)
            .order_by("pk")
            .first()
        )
        if study is None or study.review_id:
            return
        study_review_sign(
            actor=designer,
            study=study,
            password=DEMO_PASSWORD,
            findings={key: {"ok": True, "notes": "demo"} for key in REVIEW_FINDINGS},
        )

    def _register_peer(self):
        # Also on a demo database loaded before the demo had a peer.
        DicomPeer.objects.get_or_create(
            ae_title=DEMO_PEER_AE_TITLE,
            defaults={
                "hospital": Organisation.objects.get(name=HOSPITAL_A),
                "networks": DEMO_PEER_NETWORKS,
                "description": "Demo PACS on this machine",
            },
        )

    def _print_logins(self):
        self.stdout.write(f"\nDemo logins (password for all: {DEMO_PASSWORD}):")
        self.stdout.write("  admin          superuser")
        for username, org, role, _first, _last in PEOPLE:
            self.stdout.write(f"  {username:<14} {Role(role).label} at {org}")

    def _print_peer(self):
        taking = Case.objects.filter(
            hospital__name=HOSPITAL_A, status__in=IMAGING_STATUSES
        ).order_by("reference")
        references = [case.reference for case in taking]
        self.stdout.write(
            f"\nDemo DICOM peer: {DEMO_PEER_AE_TITLE} ({HOSPITAL_A}, from this"
            " machine).\nCases that take imaging now: "
            + (", ".join(references) or "none")
        )
        if references:
            self.stdout.write(
                "With `manage.py dicom_listener` running, send one a synthetic CT:\n"
                f"  manage.py phantom_series scan --accession {references[0]}\n"
                f"  TCP_NODELAY=1 storescu -aet {DEMO_PEER_AE_TITLE}"
                f" -aec {settings.PSI_DICOM_AE_TITLE} {settings.PSI_DICOM_HOST}"
                f" {settings.PSI_DICOM_PORT} scan/*.dcm"
            )
