"""The case list at scale: ``GET /api/v1/cases/?page_size=50`` on PostgreSQL.

Builds (or reuses) its own database with 100,000 cases across 200 hospitals and
20,000 users, then times the list for three personas through the whole Django/DRF
stack, in process, with DEBUG off:

- a surgeon: a clinician of one hospital (a few hundred cases),
- a case manager of the largest manufacturer (all of its cases),
- a superuser (no permission filter: the baseline).

It prints figures and asserts nothing. The targets they are read against: a
permission-filtered list costs at most 1.2x the unfiltered one, p95 at most 50 ms,
and the number of queries per request does not grow with the page. It also prints
EXPLAIN ANALYZE timings of the case queries of one request per persona and page
(``--plans`` prints the plans themselves).

    python bench/api_cases.py                       # build psi_bench, then measure
    python bench/api_cases.py --reuse               # keep the data of an earlier run
    python bench/api_cases.py --database-url postgres://postgres@db:5432/psi_bench
    python bench/api_cases.py --cases 20000 --hospitals 40 --users 4000   # smaller

Without ``--reuse`` the database is dropped and rebuilt, but only if this script
created it (it marks its databases with a comment); any other database is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/psi_bench"
# Marks databases this script created, and therefore may drop.
MARKER = "psi bench data (bench/api_cases.py); safe to drop"
LIST_URL = "/api/v1/cases/"
PAGE_SIZE = 50
DEEP_PAGE = 200

SURGEON = "bench-surgeon"
CASE_MANAGER = "bench-case-manager"
SUPERUSER = "bench-superuser"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the data already in the database (build it only if empty)",
    )
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--hospitals", type=int, default=200)
    parser.add_argument("--manufacturers", type=int, default=5)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--repeat", type=int, default=50, help="timed requests per persona and page"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--plans", action="store_true", help="print the full EXPLAIN ANALYZE plans"
    )
    return parser.parse_args()


# --- the database ---------------------------------------------------------------


def _server_conninfo(url: str) -> tuple[dict, str]:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        sys.exit("The bench needs PostgreSQL: give a postgres:// database URL.")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        sys.exit("The database URL names no database.")
    conninfo = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": unquote(parts.username or "postgres"),
        "dbname": "postgres",
    }
    if parts.password:
        conninfo["password"] = unquote(parts.password)
    return conninfo, name


def prepare_database(url: str, *, reuse: bool = False, marker: str = MARKER) -> bool:
    """Create the database if needed; True if it was (re)created empty. An existing
    one is dropped only if its comment is ``marker`` (a bench made it)."""
    import psycopg
    from psycopg import sql

    conninfo, name = _server_conninfo(url)
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s",
            [name],
        ).fetchone()
        if row is not None and reuse:
            return False
        if row is not None:
            if row[0] != marker:
                sys.exit(
                    f"Database {name!r} exists and was not created by this script; "
                    "refusing to drop it. Use another --database-url."
                )
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(marker)
            )
        )
    return True


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psi.settings")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    # DEBUG off, as in production and as Django's test runner does it: no query log,
    # no per-request static file lookups. The embedded demo keys stay in use, so
    # identity written by one run still decrypts in the next (--reuse).
    setup_test_environment(debug=False)
    # WhiteNoise warns about an uncollected static folder; the API needs none.
    warnings.filterwarnings("ignore", message="No directory at")


# --- data generation -------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _pseudonym(n: int) -> str:
    chars = []
    for _ in range(8):
        n, digit = divmod(n, 32)
        chars.append(CROCKFORD[digit])
    code = "".join(reversed(chars))
    return f"PSI-{code[:4]}-{code[4:]}"


def _copy(model, fields: list[str], rows) -> None:
    """COPY ``rows`` (tuples in ``fields`` order) into ``model``'s table."""
    from django.db import connection

    table = model._meta.db_table
    columns = ", ".join(model._meta.get_field(name).column for name in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _weighted(rng: random.Random, table: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


HOSPITAL_ROLE_MIX = [
    ("clinician", 0.6),
    ("case_coordinator", 0.35),
    ("integration", 0.05),
]
MANUFACTURER_ROLE_MIX = [
    ("case_manager", 0.10),
    ("designer", 0.30),
    ("production", 0.25),
    ("quality_assurance", 0.10),
    ("regulatory", 0.05),
    ("auditor", 0.10),
    ("integration", 0.10),
]


def generate(args: argparse.Namespace) -> None:
    """Synthetic data in bulk. Setup data only: no history rows (bulk_create and COPY
    write none, and nothing here reads history), no audit events; the permission rows
    are exactly those case_create and patient_register grant, written set-wise."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Permission
    from django.db import connection, transaction

    from cases.models import Case, CaseGroupObjectPermission, CaseReferenceCounter
    from cases.services import (  # the grants of case_create
        HOSPITAL_CASE_PERMS,
        MANUFACTURER_CASE_PERMS,
        MANUFACTURER_PATIENT_PERMS,
    )
    from consent.models import Patient, PatientGroupObjectPermission
    from consent.services import HOSPITAL_PATIENT_PERMS  # of patient_register
    from psi.crypto import identity_hmac
    from psi.models import Membership, Organisation, RoleGroup
    from psi.orgs import ROLES_BY_KIND, role_group

    User = get_user_model()
    rng = random.Random(args.seed)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    step = _stepper()

    # Organisations: one big manufacturer holds 40% of the cases, the others share
    # the rest; cases spread evenly over the hospitals (about 500 each at full size).
    countries = ["DE", "FR", "NL", "BE", "AT", "CH", "IT", "ES", "SE", "US"]
    hospitals = Organisation.objects.bulk_create(
        Organisation(
            kind=Organisation.Kind.HOSPITAL,
            name=f"Bench Hospital {i:03d}",
            country=countries[i % len(countries)],
        )
        for i in range(1, args.hospitals + 1)
    )
    manufacturers = Organisation.objects.bulk_create(
        Organisation(
            kind=Organisation.Kind.MANUFACTURER,
            name=f"Bench Manufacturer {i}",
            country=countries[i % len(countries)],
        )
        for i in range(1, args.manufacturers + 1)
    )
    small = 0.6 / max(1, args.manufacturers - 1)
    manufacturer_weights = [0.4] + [small] * (args.manufacturers - 1)

    with transaction.atomic():
        groups = {
            (org.pk, role): role_group(org, role).pk
            for org in [*hospitals, *manufacturers]
            for role in sorted(ROLES_BY_KIND[org.kind])
        }
    step(f"{len(hospitals) + len(manufacturers)} organisations, {len(groups)} groups")

    # Users: 85% at hospitals, 15% at manufacturers (40% of those at the big one);
    # one clinician in ten also works at a second hospital.
    unusable = make_password(None)
    n_manufacturer_staff = max(len(manufacturers) * 7, int(args.users * 0.15))
    n_hospital_staff = args.users - n_manufacturer_staff - 3
    members: list[tuple[str, int, str]] = [
        (SURGEON, hospitals[0].pk, "clinician"),
        (CASE_MANAGER, manufacturers[0].pk, "case_manager"),
    ]
    for i in range(n_hospital_staff):
        hospital = hospitals[i % len(hospitals)]
        # Each hospital's first member is a clinician: every case needs a prescriber.
        role = "clinician" if i < len(hospitals) else _weighted(rng, HOSPITAL_ROLE_MIX)
        members.append((f"bench-h{i:05d}", hospital.pk, role))
    for i in range(n_manufacturer_staff):
        maker = rng.choices(manufacturers, manufacturer_weights)[0]
        role = _weighted(rng, MANUFACTURER_ROLE_MIX)
        members.append((f"bench-m{i:05d}", maker.pk, role))

    users = User.objects.bulk_create(
        [
            User(
                username=username,
                email=f"{username}@example.test",
                first_name="Bench",
                last_name=username.removeprefix("bench-").title(),
                password=unusable,
            )
            for username, _, _ in members
        ]
        + [
            User(
                username=SUPERUSER,
                email=f"{SUPERUSER}@example.test",
                password=unusable,
                is_superuser=True,
                is_staff=True,
            )
        ],
        batch_size=5000,
    )
    memberships = [
        (user.pk, org_id, role)
        for user, (_, org_id, role) in zip(users[: len(members)], members, strict=True)
    ]
    hospital_ids = [h.pk for h in hospitals]
    for user_id, org_id, role in list(memberships[2:]):
        if role == "clinician" and org_id in hospital_ids and rng.random() < 0.1:
            other = rng.choice(hospital_ids)
            if other != org_id:
                memberships.append((user_id, other, role))
    Membership.objects.bulk_create(
        [Membership(user_id=u, organisation_id=o, role=r) for u, o, r in memberships],
        batch_size=5000,
    )
    User.groups.through.objects.bulk_create(
        [
            User.groups.through(user_id=u, group_id=groups[(o, r)])
            for u, o, r in memberships
        ],
        batch_size=5000,
    )
    clinicians = defaultdict(list)
    for user_id, org_id, role in memberships:
        if role == "clinician":
            clinicians[org_id].append(user_id)
    step(f"{len(users)} users, {len(memberships)} memberships")

    # Patients, one per case. Identity is encrypted as the model field would do it,
    # but from a few distinct values reused across rows: the bench never reads
    # identity, and 500,000 Fernet encryptions would only slow the setup down.
    field = Patient._meta.get_field
    tokens = {
        "family_name": [
            field("family_name").get_prep_value(f"Testperson {k}") for k in range(16)
        ],
        "given_names": [
            field("given_names").get_prep_value(f"Bench {k}") for k in range(16)
        ],
        "birth_date": [
            field("birth_date").get_prep_value(datetime.date(1940 + k, 1 + k % 12, 1))
            for k in range(16)
        ],
        "sex": [field("sex").get_prep_value(s) for s in Patient.Sex.values],
        "record_number": [
            field("record_number").get_prep_value(f"MRN-BENCH-{k}") for k in range(16)
        ],
    }
    case_hospital = [rng.choice(hospital_ids) for _ in range(args.cases)]
    created = sorted(
        now - datetime.timedelta(seconds=rng.randrange(5 * 365 * 86400))
        for _ in range(args.cases)
    )
    patient_fields = [
        "pseudonym", "hospital", "family_name", "given_names", "birth_date", "sex",
        "record_number", "record_number_hmac", "created_by", "created_at",
    ]  # fmt: skip
    _copy(
        Patient,
        patient_fields,
        (
            (
                _pseudonym(i),
                case_hospital[i],
                tokens["family_name"][i % 16],
                tokens["given_names"][i % 16],
                tokens["birth_date"][i % 16],
                tokens["sex"][i % len(tokens["sex"])],
                tokens["record_number"][i % 16],
                # Unique per hospital, as the constraint asks.
                identity_hmac(f"MRN-{i:07d}"),
                clinicians[case_hospital[i]][0],
                created[i],
            )
            for i in range(args.cases)
        ),
    )
    patient_ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True))
    step(f"{len(patient_ids)} patients")

    # Cases, in creation order so that ids grow with created_at as they do live.
    statuses = Case.Status.values
    regions = Case.Region.values
    sides = Case.Side.values
    pathways = Case.Pathway.values
    per_year: dict[int, int] = defaultdict(int)
    case_fields = [
        "reference", "patient", "hospital", "manufacturer", "prescriber", "indication",
        "anatomical_region", "side", "urgency", "planned_surgery_date",
        "regulatory_pathway", "pathway_reason", "status", "held_from_status",
        "created_by", "created_at", "updated_at",
    ]  # fmt: skip
    manufacturer_ids = [m.pk for m in manufacturers]

    def case_rows():
        for i in range(args.cases):
            year = created[i].year
            per_year[year] += 1
            prescriber = rng.choice(clinicians[case_hospital[i]])
            yield (
                f"C-{year}-{per_year[year]:05d}",
                patient_ids[i],
                case_hospital[i],
                rng.choices(manufacturer_ids, manufacturer_weights)[0],
                prescriber,
                "Post-traumatic defect; synthetic bench case.",
                rng.choice(regions),
                rng.choice(sides),
                "routine",
                None,
                rng.choice(pathways),
                "Synthetic bench case.",
                rng.choice(statuses),
                "",
                prescriber,
                created[i],
                created[i],
            )

    _copy(Case, case_fields, case_rows())
    CaseReferenceCounter.objects.bulk_create(
        CaseReferenceCounter(year=year, last=last) for year, last in per_year.items()
    )
    step(f"{args.cases} cases")

    # Object permissions, exactly as case_create / patient_register grant them: one
    # row per (object, organisation-role group, permission), set-wise in SQL.
    def perm_values(model, role_perms) -> str:
        label = model._meta.app_label
        pairs = [
            (
                role,
                Permission.objects.get(
                    content_type__app_label=label, codename=codename
                ).pk,
            )
            for role, codenames in role_perms.items()
            for codename in codenames
        ]
        return ", ".join(f"('{role}', {pk})" for role, pk in pairs)

    case_t = Case._meta.db_table
    patient_t = Patient._meta.db_table
    rolegroup_t = RoleGroup._meta.db_table
    grants = [
        # (permission table, anchor id expression, source, organisation column, perms)
        (CaseGroupObjectPermission, "c.id", f"{case_t} c", "c.hospital_id",
         perm_values(Case, HOSPITAL_CASE_PERMS)),
        (CaseGroupObjectPermission, "c.id", f"{case_t} c", "c.manufacturer_id",
         perm_values(Case, MANUFACTURER_CASE_PERMS)),
        (PatientGroupObjectPermission, "p.id", f"{patient_t} p", "p.hospital_id",
         perm_values(Patient, HOSPITAL_PATIENT_PERMS)),
        (PatientGroupObjectPermission, "c.patient_id", f"{case_t} c",
         "c.manufacturer_id", perm_values(Patient, MANUFACTURER_PATIENT_PERMS)),
    ]  # fmt: skip
    with (
        _bulk_load([CaseGroupObjectPermission, PatientGroupObjectPermission]),
        connection.cursor() as cursor,
    ):
        for model, anchor, source, org_column, values in grants:
            cursor.execute(
                f"INSERT INTO {model._meta.db_table} "
                "(group_id, permission_id, content_object_id) "
                f"SELECT DISTINCT rg.group_id, rp.permission_id, {anchor} "
                f"FROM {source} JOIN {rolegroup_t} rg ON rg.organisation_id = "
                f"{org_column} JOIN (VALUES {values}) AS rp(role, permission_id) "
                "ON rp.role = rg.role ORDER BY 1, 2, 3"
            )
    step(
        f"{CaseGroupObjectPermission.objects.count()} case and "
        f"{PatientGroupObjectPermission.objects.count()} patient group permissions"
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
    step("vacuum analyze")


@contextlib.contextmanager
def _bulk_load(models):
    """Load millions of permission rows in seconds rather than minutes: build the
    secondary indexes once afterwards instead of row by row, and skip the per-row
    foreign-key triggers (needs a superuser; the rows come from joins over existing
    rows, so they cannot dangle). The unique index stays: it is what the gate reads."""
    from django.db import DatabaseError, connection, transaction

    tables = [model._meta.db_table for model in models]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) "
            "FROM pg_index WHERE indrelid = ANY(%s::regclass[]) "
            "AND NOT indisprimary AND NOT indisunique",
            [tables],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
        try:
            with transaction.atomic():
                cursor.execute("SET session_replication_role = replica")
        except DatabaseError:  # not a superuser: the triggers stay on
            print("  (triggers stay on while loading: slower)", file=sys.stderr)
        try:
            yield
        finally:
            cursor.execute("RESET session_replication_role")
            for _, definition in indexes:
                cursor.execute(definition)


def _stepper():
    started = time.perf_counter()
    last = [started]

    def step(what: str) -> None:
        now = time.perf_counter()
        print(f"  {what:<60} {now - last[0]:6.1f} s", flush=True)
        last[0] = now

    return step


# --- measuring --------------------------------------------------------------------


def endpoint_name() -> str:
    from django.urls import Resolver404, resolve

    try:
        match = resolve(LIST_URL)
    except Resolver404:
        sys.exit(f"No view answers {LIST_URL}.")
    return f"{match.func.__module__}.{match.func.__name__}"


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _client(user):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    # A real knox token, as API clients send it: authentication is part of the cost.
    _, key = AuthToken.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


class _DatabaseTime:
    """Time spent in the database driver (execute and fetch), summed."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


def measure(args: argparse.Namespace) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from knox.models import AuthToken

    from cases.models import Case
    from cases.selectors import case_list_visible_to

    User = get_user_model()
    personas = [
        ("superuser", User.objects.get(username=SUPERUSER)),
        ("surgeon", User.objects.get(username=SURGEON)),
        ("case manager", User.objects.get(username=CASE_MANAGER)),
    ]
    visible = {name: case_list_visible_to(user).count() for name, user in personas}

    def last(name: str) -> int:
        return max(1, math.ceil(visible[name] / PAGE_SIZE))

    # The deep page: page 200 (rows 9,951-10,000), or the last page if sooner. The
    # superuser, unfiltered, is the baseline for every page number measured.
    pages = {
        "surgeon": [1, last("surgeon")],
        "case manager": [1, min(DEEP_PAGE, last("case manager"))],
    }
    pages["superuser"] = sorted({1, *pages["surgeon"], *pages["case manager"]})
    rows = []
    try:
        for name, user in personas:
            client = _client(user)
            for page in pages[name]:
                query = {"page_size": PAGE_SIZE}
                if page > 1:
                    query["page"] = page
                rows.append({"persona": name, "page": page, "client": client,
                             "query": query, "ms": [], "db": []})  # fmt: skip
        for row in rows:
            for _ in range(max(1, args.warmup)):
                response = row["client"].get(LIST_URL, row["query"])
            if response.status_code != 200:
                sys.exit(
                    f"{row['persona']}, page {row['page']}: HTTP "
                    f"{response.status_code} {response.content[:300]!r}"
                )
            body = response.json()
            row.update(
                visible=visible[row["persona"]],
                returned=len(body["results"]),
                count=body.get("count"),
                capped=body.get("count_capped"),
            )
        # Round robin: a burst of load on the machine falls on every persona alike.
        database = _DatabaseTime()
        with connection.execute_wrapper(database):
            for _ in range(args.repeat):
                for row in rows:
                    before = database.seconds
                    started = time.perf_counter()
                    row["client"].get(LIST_URL, row["query"])
                    row["ms"].append((time.perf_counter() - started) * 1000)
                    row["db"].append((database.seconds - before) * 1000)
        plans = []
        for row in rows:
            with CaptureQueriesContext(connection) as captured:
                row["client"].get(LIST_URL, row["query"])
            row["queries"] = len(captured.captured_queries)
            plans.append(
                (row["persona"], row["page"], explain(captured.captured_queries, Case))
            )
    finally:
        AuthToken.objects.filter(user__username__startswith="bench-").delete()

    print_results(rows)
    print_plans(plans, full=args.plans)


def explain(captured: list[dict], model) -> list[tuple]:
    """EXPLAIN ANALYZE of the request's queries on the case table, its group
    permissions and the user's groups (warm cache); not the token's."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from guardian.utils import get_group_obj_perms_model

    table = model._meta.db_table
    grants = get_group_obj_perms_model(model)._meta.db_table
    groups = get_user_model()._meta.get_field("groups").m2m_db_table()
    found = []
    for query in captured:
        sql = query["sql"]
        if not sql.lstrip("(").startswith("SELECT"):
            continue
        if f'FROM "{groups}"' in sql:
            kind = "groups"  # the user's groups, for the gate
        elif not (f'FROM "{table}"' in sql or f'FROM "{grants}"' in sql):
            continue
        elif sql.startswith("SELECT COUNT("):
            kind = "count"
        elif sql.startswith(
            (
                f'SELECT "{table}"."id" AS "pk" ',
                f'SELECT "{grants}"."content_object_id"',
            )
        ):
            kind = "ids"  # by the filters, or read from the grants alone
        elif sql.startswith("("):
            kind = "grants"  # the union behind allowed_transitions
        else:
            kind = "rows"
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
            plan = cursor.fetchone()[0]
            if isinstance(plan, str):
                plan = json.loads(plan)
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            text = "\n".join(line for (line,) in cursor.fetchall())
        found.append(
            (kind, plan[0]["Planning Time"], plan[0]["Execution Time"], text, sql)
        )
    return found


def print_results(rows: list[dict]) -> None:
    baseline = {r["page"]: r for r in rows if r["persona"] == "superuser"}
    header = (
        f"{'persona':<13} {'page':>5} {'visible':>8} {'rows':>5} {'count':>7} "
        f"{'capped':>6} {'median ms':>10} {'p95 ms':>8} {'db ms':>6} "
        f"{'x unfiltered':>12} {'queries':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    ratios = []
    for r in rows:
        median = statistics.median(r["ms"])
        ratio = median / statistics.median(baseline[r["page"]]["ms"])
        if r["persona"] != "superuser":
            ratios.append(ratio)
        capped = "-" if r["capped"] is None else ("yes" if r["capped"] else "no")
        count = "-" if r["count"] is None else r["count"]
        print(
            f"{r['persona']:<13} {r['page']:>5} {r['visible']:>8} {r['returned']:>5} "
            f"{count:>7} {capped:>6} {median:>10.1f} {_p95(r['ms']):>8.1f} "
            f"{statistics.median(r['db']):>6.1f} {ratio:>12.2f} {r['queries']:>8}"
        )
    print()
    print(
        "median/p95: whole request in process (auth, gate, pagination, serialising);"
        " db ms: median time in the database driver; x unfiltered: median over the"
        " superuser's median on the same page number."
    )
    by_persona = defaultdict(set)
    for r in rows:
        by_persona[r["persona"]].add(r["queries"])
    print(
        "queries per request: "
        + ", ".join(
            f"{name} {'/'.join(map(str, sorted(counts)))}"
            for name, counts in by_persona.items()
        )
        + (
            " (the same on every page)"
            if all(len(c) == 1 for c in by_persona.values())
            else " (CHANGES with the page)"
        )
    )
    print(
        f"worst p95 {max(_p95(r['ms']) for r in rows):.1f} ms (target 50); worst "
        f"ratio to the unfiltered list {max(ratios):.2f} (target 1.2)"
    )


def print_plans(plans, *, full: bool) -> None:
    print()
    print("EXPLAIN ANALYZE of the case queries of one request (ms):")
    print(f"{'persona':<13} {'page':>5} {'query':<6} {'planning':>9} {'execution':>10}")
    for name, page, queries in plans:
        for kind, planning, execution, text, sql in queries:
            print(f"{name:<13} {page:>5} {kind:<6} {planning:>9.2f} {execution:>10.2f}")
            if full:
                print(f"\n{sql}\n\n{text}\n")


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    fresh = prepare_database(args.database_url, reuse=args.reuse)
    setup_django(args.database_url)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from cases.models import Case, CaseGroupObjectPermission

    call_command("migrate", verbosity=0)
    if fresh or not Case.objects.exists():
        print(
            f"Generating {args.cases} cases, {args.hospitals} hospitals, "
            f"{args.manufacturers} manufacturers, {args.users} users:"
        )
        generating = time.perf_counter()
        generate(args)
        total = time.perf_counter() - generating
        print(f"  {'data generation in all':<60} {total:6.1f} s")
    else:
        print("Reusing the data already in the database.")
    print(
        f"Data: {Case.objects.count()} cases, "
        f"{get_user_model().objects.count()} users, "
        f"{CaseGroupObjectPermission.objects.count()} case group permissions; "
        f"PostgreSQL {connection.pg_version // 10000}."
    )
    print(
        f"Measuring GET {LIST_URL}?page_size={PAGE_SIZE} via {endpoint_name()}; "
        f"DEBUG={settings.DEBUG}; {args.warmup} warm-up and {args.repeat} timed "
        "requests per row, taken in turn."
    )
    load = os.getloadavg()[0]
    measure(args)
    print(
        f"\nMachine: {os.cpu_count()} CPUs, load average {load:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after measuring; "
        f"run time {time.perf_counter() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
