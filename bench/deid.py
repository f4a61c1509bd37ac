"""De-identification throughput on a synthetic head CT (512 x 512, 16-bit, 300 slices).

Writes the phantom series to a temporary folder, then times:

- PSI file to file: ``deidentify_file`` (read with deferred pixel data, de-identify,
  write), in one process and in ``--workers`` processes (the ingest path's shape);
- PSI engine alone: ``deidentify`` on datasets already read;
- PSI plain objects: ``PlainMemo`` on files already in memory (the ingest's way
  for a series: each distinct element de-identified once), writing nowhere;
- pydicom alone: the same read and write with no de-identification (the I/O floor);
- dicognito, when it is installed (``.venv/bin/pip install dicognito``; it is not a
  PSI dependency), file to file and engine alone, on the same files.

It prints figures and asserts nothing. The issue's target, for reading them: the
whole ingest path at 250 slices/s or more on 2 cores, so de-identifying one slice
must cost well under 2 ms of CPU besides I/O. Wall-clock figures depend on what else
the machine runs: the CPU figures (process time) are the steadier ones.

    python bench/deid.py
    python bench/deid.py --slices 100 --workers 1 --no-dicognito
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402

from cases.imaging.deid import DEFER_SIZE, deidentify, deidentify_file  # noqa: E402
from cases.imaging.deid.plain import PlainMemo  # noqa: E402
from cases.imaging.phantom import PhantomSpec, write_series  # noqa: E402

KWARGS = {
    "pseudonym": "PSI-BENCH01",
    "uid_secret": b"bench-secret-not-for-production!",
    "date_offset_days": -1234,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512, help="rows and columns")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-dicognito", action="store_true")
    return parser.parse_args()


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def line(name: str, n: int, timer: Timer, cpu: float | None = None) -> None:
    cpu = timer.cpu if cpu is None else cpu
    print(
        f"  {name:<44} {n / timer.wall:8.1f} slices/s  "
        f"{timer.wall / n * 1000:6.2f} ms/slice wall  {cpu / n * 1000:6.2f} ms CPU"
    )


def psi_files(paths: list[Path], out: Path) -> float:
    start = time.process_time()
    for path in paths:
        deidentify_file(path, out / path.name, **KWARGS)
    return time.process_time() - start


def io_only(paths: list[Path], out: Path) -> None:
    for path in paths:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
        pydicom.dcmwrite(out / path.name, ds, enforce_file_format=True)


def dicognito_files(paths: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")
    for path in paths:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
        anonymizer.anonymize(ds)
        pydicom.dcmwrite(out / path.name, ds, enforce_file_format=True)


def fresh(folder: Path) -> Path:
    """An empty output folder: files are new, as on ingest (replacing old files
    costs the file system more than writing new ones)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def main() -> None:
    args = parse_args()
    n = args.slices
    try:
        load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load average unknown"
    size = f"{args.rows} x {args.rows}"
    print(f"{n} slices of {size}, 16-bit; {os.cpu_count()} CPUs, {load}")
    with tempfile.TemporaryDirectory(prefix="psi-bench-deid-") as tmp:
        folder = Path(tmp)
        with Timer() as made:
            paths = write_series(
                folder / "in", PhantomSpec(slices=n, rows=args.rows, columns=args.rows)
            )
        per_slice = made.wall / n * 1000
        print(f"  phantom written in {made.wall:.1f} s ({per_slice:.1f} ms/slice)")
        out = folder / "out"
        # Warm up: the table is compiled and the page cache filled before timing.
        psi_files(paths[:5], fresh(out))
        print()

        with Timer() as t:
            io_only(paths, fresh(out))
        line("pydicom read + write, no de-identification", n, t)
        with Timer() as t:
            psi_files(paths, fresh(out))
        line("PSI deidentify_file, 1 process", n, t)

        if args.workers > 1:
            chunks = [paths[i :: args.workers] for i in range(args.workers)]
            with multiprocessing.Pool(args.workers) as pool:
                pool.starmap(psi_files, [(c[:2], fresh(out)) for c in chunks[:1]])
                fresh(out)
                with Timer() as t:
                    cpu = sum(pool.starmap(psi_files, [(c, out) for c in chunks]))
            line(f"PSI deidentify_file, {args.workers} processes", n, t, cpu)

        datasets = [pydicom.dcmread(p, defer_size=DEFER_SIZE) for p in paths]
        with Timer() as t:
            for ds in datasets:
                deidentify(ds, **KWARGS)
        line("PSI deidentify (engine alone)", n, t)

        contents = [p.read_bytes() for p in paths]
        with Timer() as t:
            memo = PlainMemo(**KWARGS)
            for data in contents:
                if memo.deidentify(data) is None:
                    sys.exit("a phantom slice is not plain: see deid.plain")
        line("PSI PlainMemo, files in memory", n, t)

        if args.no_dicognito:
            return
        try:
            from dicognito import __version__ as dicognito_version
            from dicognito.anonymizer import Anonymizer
        except ImportError:
            print("\n  dicognito not installed: .venv/bin/pip install dicognito")
            return

        print()
        with Timer() as t:
            dicognito_files(paths, fresh(out))
        line(f"dicognito {dicognito_version} file to file, 1 process", n, t)
        anonymizer = Anonymizer(seed="bench")
        datasets = [pydicom.dcmread(p, defer_size=DEFER_SIZE) for p in paths]
        with Timer() as t:
            for ds in datasets:
                anonymizer.anonymize(ds)
        line(f"dicognito {dicognito_version} anonymize (engine alone)", n, t)


if __name__ == "__main__":
    main()
