"""The imaging ingest end to end: dcmtk's storescu -> our C-STORE listener -> a Celery
worker that de-identifies, stores, indexes and judges the study.

For each series size it generates a synthetic head CT (512 x 512, 16-bit) and
measures, in one run:

(a) copying the files (the floor any receiver pays);
(b) the whole PSI path: ``storescu`` sends the series to ``manage.py dicom_listener``,
    a ``celery -A psi worker`` (prefork, ``--concurrency``) ingests the batches and
    evaluates the study, until the study is accepted; it also prints when storescu
    finished, and the worker processes' peak memory (VmHWM);
(c) dicognito de-identifying the same files file to file, when it is installed
    (``.venv/bin/pip install dicognito``; not a PSI dependency);
(d) Orthanc receiving the same files from storescu, when it is installed (Debian's
    ``orthanc``; run with its own throw-away configuration and storage): a
    reference for how fast this machine is, taken in the same run.

It prints figures and asserts nothing. The target they are read against: (b) at
least 250 slices/s, and worker memory flat in the number of slices (compare
``--slices 100,300,600``). Runs differ by a quarter or more on a small shared
machine: ``--repeat`` gives the median of several.

Needs PostgreSQL, Redis and dcmtk's ``storescu``. It drops and recreates its own
database (marked with a comment; any other database is refused) and uses its own
Redis database (12 by default, flushed).

    python bench/ingest.py
    python bench/ingest.py --slices 100,300,600 --concurrency 2
    python bench/ingest.py --repeat 5 --timeline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api_cases import prepare_database  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/psi_bench_ingest"
DEFAULT_BROKER = "redis://127.0.0.1:6379/12"
MARKER = "psi bench data (bench/ingest.py); safe to drop"
PEER_AE = "BENCHPACS"
OUR_AE = "PSI"
PASSWORD = "bench-password-not-for-production-1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--slices", default="300", help="comma-separated series sizes (300)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PSI_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
    )
    parser.add_argument("--broker", default=DEFAULT_BROKER)
    parser.add_argument("--no-dicognito", action="store_true")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of (b) per size, each on a new case; prints median, best, worst",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print when each imaging job was queued, started and finished",
    )
    parser.add_argument(
        "--workdir",
        help="where the bench's throw-away folder goes (the system's temporary "
        "folder): away from where many files were deleted in the last minutes",
    )
    return parser.parse_args()


def production_like() -> dict[str, str]:
    """DEBUG off, as a deployment runs (no query log in every process), with
    throw-away secrets for this run."""
    from cryptography.fernet import Fernet

    return {
        "DEBUG": "false",
        "ALLOWED_HOSTS": "localhost",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PSI_IDENTITY_KEYS": Fernet.generate_key().decode(),
        "PSI_IDENTITY_HMAC_KEY": secrets.token_hex(32),
        "PSI_UID_SECRET": secrets.token_hex(32),
    }


# --- the database -----------------------------------------------------------------


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psi.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class World:
    """The people, the peer and a fresh submitted case per run."""

    def __init__(self) -> None:
        import datetime

        from django.contrib.auth import get_user_model

        from cases.imaging import quality
        from cases.imaging.models import AcquisitionProfile, DicomPeer
        from cases.models import Case
        from consent.models import ConsentForm, Purpose
        from psi.models import Organisation, Role
        from psi.orgs import membership_grant, organisation_create

        User = get_user_model()
        admin = User.objects.create_superuser("bench-admin", "a@example.test", PASSWORD)
        self.hospital = organisation_create(
            actor=admin,
            kind=Organisation.Kind.HOSPITAL,
            name="Bench Hospital",
            country="DE",
        )
        self.manufacturer = organisation_create(
            actor=admin,
            kind=Organisation.Kind.MANUFACTURER,
            name="Bench Implants",
            country="IE",
        )
        self.people = {}
        for username, org, role in (
            ("bench-surgeon", self.hospital, Role.CLINICIAN),
            ("bench-coordinator", self.hospital, Role.CASE_COORDINATOR),
            ("bench-case-manager", self.manufacturer, Role.CASE_MANAGER),
        ):
            user = User.objects.create_user(
                username,
                f"{username}@example.test",
                PASSWORD,
                first_name="Bench",
                last_name=username.split("-", 1)[1].title(),
            )
            membership_grant(actor=admin, user=user, organisation=org, role=role)
            self.people[username] = user
        self.form = ConsentForm.objects.create(
            title="Bench consent",
            version="1",
            language="en",
            text="Synthetic consent for the benchmark.",
            purposes=list(Purpose.values),
            valid_from=datetime.date(2024, 1, 1),
        )
        DicomPeer.objects.create(hospital=self.hospital, ae_title=PEER_AE)
        # The default cranial profile asks for 120 mm of coverage; every size the
        # bench sends (1 mm slices) should be accepted, so the floor is lowered.
        limits = quality.default_profile(Case.Region.CRANIAL).as_dict()
        limits["min_coverage_mm"] = 50.0
        AcquisitionProfile.objects.create(region=Case.Region.CRANIAL, limits=limits)
        self.count = 0

    def submitted_case(self):
        import datetime

        from django.utils import timezone

        from cases import services as case_services
        from cases.models import Case
        from consent.models import Consent, LegalBasis, Patient, Purpose
        from consent.services import consent_record, patient_register

        self.count += 1
        coordinator = self.people["bench-coordinator"]
        surgeon = self.people["bench-surgeon"]
        patient = patient_register(
            actor=coordinator,
            hospital=self.hospital,
            family_name=f"Benchpatient{self.count}",
            given_names="Synthetic",
            birth_date=datetime.date(1970, 1, 1),
            sex=Patient.Sex.FEMALE,
            record_number=f"BENCH-{uuid.uuid4().hex[:8]}",
        )
        consent_record(
            actor=coordinator,
            patient=patient,
            form=self.form,
            purposes={
                Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
                Purpose.DESIGN_AND_MANUFACTURE: LegalBasis.EXPLICIT_CONSENT,
            },
            method=Consent.Method.ELECTRONIC,
            signed_at=timezone.now() - datetime.timedelta(days=1),
        )
        case = case_services.case_create(
            actor=surgeon,
            patient=patient,
            manufacturer=self.manufacturer,
            prescriber=surgeon,
            indication="Benchmark: cranial defect",
            anatomical_region=Case.Region.CRANIAL,
            side=Case.Side.LEFT,
            regulatory_pathway=Case.Pathway.EU_CUSTOM_MADE,
            pathway_reason="Benchmark case.",
            planned_surgery_date=timezone.localdate() + datetime.timedelta(days=30),
        )
        prescription = case_services.prescription_create(
            actor=surgeon,
            case=case,
            prescriber_licence="BENCH-1",
            material="peek",
            thickness_mm="4.0",
            screw_count=6,
            screw_positions="Three along each margin",
            margins_mm="2.0",
        )
        case_services.prescription_sign(
            actor=surgeon, prescription=prescription, password=PASSWORD
        )
        return case_services.case_advance(actor=surgeon, case=case, transition="submit")


# --- processes ----------------------------------------------------------------------


class Process:
    def __init__(self, name: str, command: list[str], env: dict, log: Path) -> None:
        self.name, self.log = name, log
        with log.open("w") as output:
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                sys.exit(f"{self.name} did not start:\n{tail}")
            time.sleep(0.1)

    def peak_rss_mib(self) -> list[float]:
        """VmHWM of the process and its children, in MiB."""
        peaks = []
        for pid in [self.popen.pid, *_children(self.popen.pid)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the process and its children so far."""
        return sum(
            _cpu_seconds(pid) for pid in [self.popen.pid, *_children(self.popen.pid)]
        )

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, 9)
            self.popen.wait(timeout=10)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on this host (the bench's database is
    the only busy one while it runs)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "postgres":
                total += _cpu_seconds(int(stat.parent.name))
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the measurements ----------------------------------------------------------------


def settle() -> None:
    """Write out what earlier steps left in the page cache (the series just
    generated, the copies of the floor, a reference's output) before a measured
    run. The kernel writes dirty pages back about 30 s after they were made: a
    run would otherwise share the disk with the writeback of the 150 MB series
    of a run or two before it, while the listener waits for the device at every
    object."""
    os.sync()


def copy_floor(paths: list[Path], out: Path) -> float:
    out.mkdir()
    start = time.perf_counter()
    for path in paths:
        shutil.copyfile(path, out / path.name)
    return time.perf_counter() - start


def dicognito_seconds(paths: list[Path], out: Path) -> float | None:
    try:
        from dicognito.anonymizer import Anonymizer
    except ImportError:
        return None
    import pydicom

    out.mkdir()
    anonymizer = Anonymizer(seed="bench")
    settle()
    start = time.perf_counter()
    for path in paths:
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / path.name, enforce_file_format=True)
    return time.perf_counter() - start


def storescu(called_ae: str, port: int, paths: list[Path]) -> None:
    """Send ``paths`` to the AE ``called_ae`` on this host's ``port``; exit on
    failure."""
    sent = subprocess.run(
        ["storescu", "-aet", PEER_AE, "-aec", called_ae, "127.0.0.1", str(port)]
        + [str(p) for p in paths],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if sent.returncode != 0:
        sys.exit(f"storescu to {called_ae} failed:\n{sent.stdout}{sent.stderr}")


def orthanc_seconds(paths: list[Path], folder: Path) -> float | None:
    """storescu -> Orthanc, receiving only (it stores the files and indexes them in
    its SQLite database), until storescu is done; None without Orthanc."""
    program = shutil.which("Orthanc")
    if program is None:
        return None
    folder.mkdir()
    port = _free_port()
    config = folder / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "psi-bench",
                "StorageDirectory": str(folder / "storage"),
                "IndexDirectory": str(folder / "storage"),
                "DicomAet": "ORTHANC",
                "DicomPort": port,
                "HttpPort": _free_port(),
                "RemoteAccessAllowed": False,
                "DicomCheckCalledAet": False,
                "Plugins": [],
            }
        )
    )
    # dcmtk, inside Orthanc as in storescu, waits for delayed ACKs without it.
    orthanc = Process(
        "orthanc",
        [program, str(config)],
        {**os.environ, "TCP_NODELAY": "1"},
        folder / "orthanc.log",
    )
    try:
        orthanc.wait_for("Orthanc has started")
        settle()
        start = time.perf_counter()
        storescu("ORTHANC", port, paths)
        return time.perf_counter() - start
    finally:
        orthanc.stop()


def psi_path(case, paths, *, env, folder: Path, concurrency: int, timeout: float):
    """storescu -> listener -> worker until the study is judged."""
    import redis

    from cases.imaging.models import ImagingStudy

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    port = _free_port()
    python = sys.executable
    worker = Process(
        "worker",
        [
            python,
            "-m",
            "celery",
            "-A",
            "psi",
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
        ],
        {**env, "PYTHONUNBUFFERED": "1"},
        folder / "worker.log",
    )
    listener = Process(
        "listener",
        [python, "manage.py", "dicom_listener", "--port", str(port)],
        {**env, "PYTHONUNBUFFERED": "1"},
        folder / "listener.log",
    )
    try:
        worker.wait_for("ready.")
        listener.wait_for("DICOM listener")
        cpu_before = {
            "listener": listener.cpu_seconds(),
            "worker": worker.cpu_seconds(),
            "postgres": _postgres_cpu_seconds(),
            "storescu": resource.getrusage(resource.RUSAGE_CHILDREN),
        }
        start = time.perf_counter()
        started_at = time.time()
        storescu(OUR_AE, port, paths)
        stored = time.perf_counter() - start
        judged = {
            ImagingStudy.Status.ACCEPTED,
            ImagingStudy.Status.REJECTED,
            ImagingStudy.Status.QUARANTINED,
        }
        deadline = time.monotonic() + timeout
        # Seldom polled: the poll takes CPU from the parties being measured. When
        # the study was judged is read from the evaluation's record afterwards.
        while True:
            study = ImagingStudy.objects.filter(case=case).first()
            if study is not None and study.status in judged:
                break
            if time.monotonic() > deadline:
                sys.exit("the study was not judged in time; see " + str(folder))
            time.sleep(0.05)
        total = _judged_at(study) - started_at
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = cpu_before.pop("storescu")
        cpu = {
            "listener": listener.cpu_seconds() - cpu_before["listener"],
            "worker": worker.cpu_seconds() - cpu_before["worker"],
            "postgres": _postgres_cpu_seconds() - cpu_before["postgres"],
            "storescu": children.ru_utime
            + children.ru_stime
            - before.ru_utime
            - before.ru_stime,
        }
        peaks = worker.peak_rss_mib()
        jobs = _job_times(case)
        timeline = _job_timeline(case, started_at)
    finally:
        listener.stop()
        worker.stop()
    return {
        "stored": stored,
        "total": total,
        "status": study.status,
        "instances": study.instance_count,
        "peaks": peaks,
        "jobs": jobs,
        "cpu": cpu,
        "timeline": timeline,
    }


def _judged_at(study) -> float:
    """When the study was judged (seconds since the epoch): the end of its
    last evaluation, which set the verdict in the same transaction."""
    from cases.imaging.services import EVALUATE_KIND
    from psi.models import Job

    finished = (
        Job.objects.filter(
            kind=EVALUATE_KIND,
            status=Job.Status.SUCCEEDED,
            params__study_id=study.pk,
        )
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    return finished.timestamp()


def _job_times(case) -> dict[str, tuple[int, float]]:
    """Per kind of imaging job of the case: how many, and their seconds of work."""
    from cases.imaging.models import ImagingStudy
    from psi.models import Job

    studies = set(ImagingStudy.objects.filter(case=case).values_list("pk", flat=True))
    times: dict[str, tuple[int, float]] = {}
    for job in Job.objects.filter(
        kind__startswith="imaging.", finished_at__isnull=False
    ):
        # Ingest jobs name the case; evaluation and previews name the study.
        if job.params.get("case_id", case.pk) != case.pk:
            continue
        if "study_id" in job.params and job.params["study_id"] not in studies:
            continue
        count, seconds = times.get(job.kind, (0, 0.0))
        times[job.kind] = (
            count + 1,
            seconds + (job.finished_at - job.started_at).total_seconds(),
        )
    return times


def _job_timeline(case, started_at: float) -> list[str]:
    """Each imaging job of the case: queued, started and finished, in seconds since
    storescu started."""
    import datetime

    from psi.models import Job

    origin = datetime.datetime.fromtimestamp(started_at, tz=datetime.UTC)
    lines = []
    for job in Job.objects.filter(kind__startswith="imaging.").order_by("created_at"):
        if job.params.get("case_id", case.pk) != case.pk or job.started_at is None:
            continue
        if job.created_at < origin:
            continue
        marks = [
            (moment - origin).total_seconds()
            for moment in (job.created_at, job.started_at, job.finished_at)
            if moment is not None
        ]
        count = len(job.params.get("paths", []))
        lines.append(
            f"{job.kind:<18} {count:4d} files  queued {marks[0]:5.2f}  "
            + "  ".join(
                f"{label} {mark:5.2f}"
                for label, mark in zip(("started", "finished"), marks[1:], strict=False)
            )
        )
    return lines


def rate(n: int, seconds: float) -> str:
    return f"{seconds:7.2f} s {n / seconds:8.1f} slices/s"


def main() -> None:
    args = parse_args()
    if shutil.which("storescu") is None:
        sys.exit("storescu not found: install dcmtk")
    sizes = [int(s) for s in args.slices.split(",") if s.strip()]
    prepare_database(args.database_url, marker=MARKER)
    with tempfile.TemporaryDirectory(
        prefix="psi-bench-ingest-", dir=args.workdir
    ) as tmp:
        folder = Path(tmp)
        env = {
            **os.environ,
            "DATABASE_URL": args.database_url,
            "CELERY_BROKER_URL": args.broker,
            "PSI_VAR_DIR": str(folder / "var"),
            "DJANGO_SETTINGS_MODULE": "psi.settings",
            **production_like(),
        }
        setup_django(env)
        from cases.imaging.phantom import PhantomSpec, write_series

        world = World()
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(
            f"{os.cpu_count()} CPUs, load average {load}; worker --concurrency "
            f"{args.concurrency}; 512 x 512 16-bit CT slices"
        )
        for n in sizes:
            run = folder / f"run-{n}"
            run.mkdir()
            totals, stored = [], []
            for attempt in range(args.repeat):
                case = world.submitted_case()
                paths = write_series(
                    run / f"in-{attempt}",
                    PhantomSpec(
                        slices=n,
                        seed=n * 1000 + attempt,
                        accession_number=case.reference,
                    ),
                )
                if attempt == 0:
                    size_mb = sum(p.stat().st_size for p in paths) / 1e6
                    print(f"\n{n} slices, {size_mb:.0f} MB")
                    floor = copy_floor(paths, run / "copy")
                    print(f"  (a) copy the files               {rate(n, floor)}")
                attempt_folder = run / f"attempt-{attempt}"
                attempt_folder.mkdir()
                settle()
                result = psi_path(
                    case,
                    paths,
                    env=env,
                    folder=attempt_folder,
                    concurrency=args.concurrency,
                    timeout=args.timeout,
                )
                totals.append(result["total"])
                stored.append(result["stored"])
                report(n, result, floor, timeline=args.timeline)
            if args.repeat > 1:
                print(
                    f"  (b) over {args.repeat} runs: median "
                    f"{n / statistics.median(totals):.1f} slices/s, best "
                    f"{n / min(totals):.1f}, worst {n / max(totals):.1f} "
                    f"(storescu's part: median {n / statistics.median(stored):.1f})"
                )
            if not args.no_dicognito:
                seconds = dicognito_seconds(paths, run / "dicognito")
                if seconds is None:
                    print("  (c) dicognito: not installed (pip install dicognito)")
                else:
                    print(
                        f"  (c) dicognito, file to file      {rate(n, seconds)}  "
                        f"(PSI end to end is {seconds / statistics.median(totals):.2f}"
                        "x its speed)"
                    )
            if not args.no_orthanc:
                runs = [
                    orthanc_seconds(paths, run / f"orthanc-{attempt}")
                    for attempt in range(args.repeat)
                ]
                if None in runs:
                    print("  (d) Orthanc: not installed (Debian package orthanc)")
                else:
                    seconds = statistics.median(runs)
                    print(
                        f"  (d) Orthanc, receiving only      {rate(n, seconds)}  "
                        f"(PSI end to end is {seconds / statistics.median(totals):.2f}"
                        "x its speed; median of its runs)"
                    )


def report(n: int, result: dict, floor: float, *, timeline: bool) -> None:
    print(
        f"  (b) storescu -> {result['status']:<8} "
        f"        {rate(n, result['total'])}  "
        f"({result['total'] / floor:.1f}x the copy)"
    )
    print(f"      of which storescu until done  {rate(n, result['stored'])}")
    for kind, (count, seconds) in sorted(result["jobs"].items()):
        print(f"      {count} {kind} jobs, {seconds:.2f} s of work in all")
    cpu = result["cpu"]
    print(
        "      CPU seconds until judged: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
        + f" ({sum(cpu.values()):.2f} in all, on {os.cpu_count()} CPUs)"
    )
    if timeline:
        for line in result["timeline"]:
            print("        " + line)
    peaks = ", ".join(f"{p:.0f}" for p in result["peaks"])
    print(f"      worker peak RSS (MiB, main and pool): {peaks}")
    if result["instances"] != n:
        print(f"      WARNING: {result['instances']} instances stored")


if __name__ == "__main__":
    main()
