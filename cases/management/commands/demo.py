"""Load the demo data set: two hospitals, a manufacturer, a user for every role,
synthetic patients with consent and cases in several states. Idempotent."""

import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from cases import services as case_services
from cases.models import Case
from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.services import consent_record, patient_register
from psi.models import Organisation, Role
from psi.orgs import membership_grant, organisation_create

DEMO_PASSWORD = "psi-demo-password"

HOSPITAL_A = "Demo University Hospital"
HOSPITAL_B = "Demo County Hospital"
MANUFACTURER = "Demo Implants Ltd"

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
DEMO_CASES = [
    # (region, side, steps along ROUTE, then an optional final transition)
    ("cranial", "left", 0, None),
    ("orbital", "right", 1, None),
    ("mandible", "left", 2, None),
    ("cranial", "right", 4, None),
    ("midface", "bilateral", 5, None),
    ("pelvis", "left", 8, None),
    ("maxilla", "midline", 1, ("cancel", "surgeon")),
]


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
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self._print_logins()

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
        for number, (_region, _side, steps, final) in enumerate(DEMO_CASES, start=1):
            case = Case.objects.get(indication__startswith=f"Demo indication {number}:")
            prescription = case_services.prescription_latest(case)
            if prescription and not prescription.is_signed:
                case_services.prescription_sign(
                    actor=people["surgeon"],
                    prescription=prescription,
                    password=DEMO_PASSWORD,
                )
            for name, who in ROUTE[:steps]:
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

    def _print_logins(self):
        self.stdout.write(f"\nDemo logins (password for all: {DEMO_PASSWORD}):")
        self.stdout.write("  admin          superuser")
        for username, org, role, _first, _last in PEOPLE:
            self.stdout.write(f"  {username:<14} {Role(role).label} at {org}")
