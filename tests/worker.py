"""A real Celery worker process for the tests that need one (marked ``worker``):
started against the pytest-django test database and a Redis database of the tests'
own, with the folders it shares with the test process given in its environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from psi.celery import app
from psi.models import Job
from tests.psi.conftest import subprocess_database_url

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database of the tests' own, so no other queue is disturbed, and in it keys
# of this test process's own: two test runs on one machine (or two xdist processes)
# neither take each other's tasks nor empty each other's queues.
REDIS_DB = int(os.environ.get("PSI_TEST_WORKER_REDIS_DB", "13"))
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
KEY_PREFIX = f"psi-test-{uuid.uuid4().hex[:12]}:"
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


#: What a module of worker tests puts in its ``pytestmark``.
WORKER_TEST_MARKS = [
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


@contextmanager
def running_worker(
    log: Path, *, imports: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Worker]:
    """A prefork worker with one pool process, until the block ends."""
    _forget_keys()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "psi.settings",
        # The pytest-django test database, not the development one.
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_BROKER_URL": BROKER,
        "PSI_BROKER_KEY_PREFIX": KEY_PREFIX,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
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
        "--loglevel=INFO",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-n",
        f"psi-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    for module in imports:
        command += ["-I", module]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=environment,
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
        _forget_keys()


def _forget_keys() -> None:
    """What an earlier worker of this process left in Redis."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    if keys := list(client.scan_iter(match=f"{KEY_PREFIX}*")):
        client.delete(*keys)


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
    saved = (
        conf.task_always_eager,
        conf.broker_url,
        conf.broker_write_url,
        conf.broker_transport_options,
    )
    _forget_broker_connections()
    conf.task_always_eager, conf.broker_url, conf.broker_write_url = (
        False,
        BROKER,
        BROKER,
    )
    conf.broker_transport_options = {
        **saved[3],
        "global_keyprefix": KEY_PREFIX,
    }
    try:
        yield
    finally:
        _forget_broker_connections()
        (
            conf.task_always_eager,
            conf.broker_url,
            conf.broker_write_url,
            conf.broker_transport_options,
        ) = saved


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


def parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (name) state ppid ..."; the name may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
