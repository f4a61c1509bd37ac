"""A real Celery worker (prefork, one process) runs jobs against the test database:
the audit-verify job end to end, a job whose pool process is killed mid-run, and a
job the sweeper sends again after its message was lost."""

import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from psi.audit import audit_append, audit_verify, audit_verify_enqueue
from psi.celery import app
from psi.jobs import job_enqueue, job_sweep
from psi.models import AuditEvent, Job
from tests.psi.conftest import subprocess_database_url
from tests.psi.worker_tasks import SLOW_TASK

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database of the core tests' own, so no other queue is disturbed.
REDIS_DB = int(os.environ.get("PSI_TEST_WORKER_REDIS_DB", "13"))
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
FINISHED = (Job.Status.SUCCEEDED, Job.Status.FAILED)


def _redis_answers() -> bool:
    try:
        return bool(
            redis.Redis(
                host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1
            ).ping()
        )
    except redis.RedisError:
        return False


pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the worker process must reach the test database: needs PostgreSQL "
        "(set DATABASE_URL=postgres://...)",
    ),
    pytest.mark.skipif(
        not _redis_answers(), reason=f"needs Redis at {REDIS_HOST}:{REDIS_PORT}"
    ),
    pytest.mark.django_db(transaction=True),
]


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB).flushdb()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "psi.settings",
        # The pytest-django test database, not the development one.
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_BROKER_URL": BROKER,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "psi",
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        "-Q",
        "celery",
        "-I",
        "tests.psi.worker_tasks",
        "--loglevel=INFO",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-n",
        f"psi-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Worker(process, log)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in started.tail(200):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not start:\n{started.tail()}")
            time.sleep(0.2)
        yield started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _forget_broker_connections() -> None:
    # Eager tasks earlier in this process pooled a producer for the in-memory
    # broker; drop it (and the connection pool) as Celery does after a fork.
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@contextmanager
def sending_to_the_broker():
    """This process only sends: point psi's Celery app at the test broker, not at
    the eager mode the settings chose at import."""
    conf = app.conf
    # Celery resolves broker_write_url from the settings' broker at start-up, so
    # both are pointed at the test broker (CI sets CELERY_BROKER_URL to another).
    saved = conf.task_always_eager, conf.broker_url, conf.broker_write_url
    _forget_broker_connections()
    conf.task_always_eager, conf.broker_url, conf.broker_write_url = (
        False,
        BROKER,
        BROKER,
    )
    try:
        yield
    finally:
        _forget_broker_connections()
        conf.task_always_eager, conf.broker_url, conf.broker_write_url = saved


def wait_for(job: Job, ready, worker: Worker, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if ready(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job.pk} still {job.status} ({job.progress}%, attempts "
                f"{job.attempts}) after {timeout}s; worker log:\n{worker.tail()}"
            )
        time.sleep(0.1)


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (name) state ppid ..."; the name may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_a_real_worker_runs_the_audit_verify_job(worker, auditor):
    for i in range(3):
        audit_append(actor=None, action="test.before", payload={"i": i})
    expected = AuditEvent.objects.count()

    with sending_to_the_broker():
        job = audit_verify_enqueue(actor=auditor)

    job = wait_for(job, lambda j: j.status in FINISHED, worker)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress, job.attempts) == (100, 1)
    assert job.result == {
        "ok": True,
        "checked": expected,
        "broken_seq": None,
        "problem": "",
    }
    assert job.message == f"{expected} events verified"
    assert job.started_at <= job.finished_at
    verified = AuditEvent.objects.get(action="audit.verified")
    assert verified.object_id == str(job.pk) and verified.actor == auditor
    # psi.celery binds the task id as the correlation id of what the task writes.
    assert verified.correlation_id
    assert audit_verify().ok


def test_a_job_whose_pool_process_is_killed_mid_run_finishes_exactly_once(worker):
    with sending_to_the_broker():
        job = job_enqueue(
            kind="test.slow", task_name=SLOW_TASK, params={"steps": 50, "pause": 0.1}
        )

    running = wait_for(
        job,
        lambda j: (
            j.status == Job.Status.RUNNING
            and j.progress >= 10
            and j.message.startswith("pid ")
        ),
        worker,
    )
    pid = int(running.message.split()[1])
    # Kill the pool process executing the task, never anything else.
    assert pid != worker.process.pid and _parent_of(pid) == worker.process.pid
    os.kill(pid, signal.SIGKILL)

    done = wait_for(job, lambda j: j.status in FINISHED, worker, timeout=90)
    assert done.status == Job.Status.SUCCEEDED, f"{done.error}\n{worker.tail()}"
    assert done.attempts == 2, "Celery's retry_on_worker_lost took the job over"
    assert done.result["attempt"] == 2 and done.result["pid"] != pid
    effects = AuditEvent.objects.filter(
        action="test.slow_job_done", object_id=str(job.pk)
    )
    assert effects.count() == 1
    assert effects.get().payload == {"attempt": 2}
    assert audit_verify().ok


def test_the_sweeper_resends_a_job_whose_message_was_lost(worker, auditor):
    job = Job.objects.create(
        kind="audit.verify", task_name="psi.tasks.audit_verify", actor=auditor
    )  # never sent: as if the broker lost the message
    Job.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=1)
    )

    with sending_to_the_broker():
        assert job_sweep() == {"requeued": 1, "failed": 0}

    done = wait_for(job, lambda j: j.status in FINISHED, worker)
    assert done.status == Job.Status.SUCCEEDED
    assert (done.attempts, done.result["ok"]) == (1, True)
