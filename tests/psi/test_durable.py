"""New files written durably, leaving the page cache once on disk (psi.durable)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import stat
from pathlib import Path

import pytest

from psi import durable
from psi.durable import BUFFER_BYTES, DurableFile, RecordFile, sync_paths

#: Tests that read the kernel's view of a descriptor (/proc) or of the page cache.
linux = pytest.mark.skipif(
    not hasattr(os, "posix_fadvise") or not Path("/proc/self/fd").exists(),
    reason="needs Linux (/proc, posix_fadvise)",
)
SIZES = [0, 1, 4095, 4096, 4097, BUFFER_BYTES - 1, BUFFER_BYTES, 3 * BUFFER_BYTES + 5]


def _content(size: int) -> bytes:
    return bytes((i * 7 + i // 4096) % 251 for i in range(size))


@pytest.fixture
def fsynced(monkeypatch) -> list[Path]:
    """The paths fsync was called on, in order."""
    calls: list[Path] = []
    real = os.fsync

    def recording(descriptor: int) -> None:
        calls.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        real(descriptor)

    monkeypatch.setattr(durable.os, "fsync", recording)
    return calls


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", [1000, 65536, None])
def test_the_file_holds_exactly_what_was_written(tmp_path, size, chunk):
    data = _content(size)
    path = tmp_path / "object.dcm"
    with DurableFile(path) as handle:
        step = chunk or max(size, 1)
        for start in range(0, size, step):
            handle.write(memoryview(data)[start : start + step])
    assert path.read_bytes() == data
    assert handle.size == size


@linux
def test_the_file_is_fsynced_on_close_unless_the_caller_syncs_later(tmp_path, fsynced):
    with DurableFile(tmp_path / "now.dcm") as handle:
        handle.write(b"x" * 5000)
    with DurableFile(tmp_path / "later.dcm", sync=False) as handle:
        handle.write(b"y" * 5000)
    assert fsynced == [tmp_path / "now.dcm"]


def test_a_new_file_is_private_and_never_replaces_one(tmp_path):
    path = tmp_path / "object.dcm"
    path.write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        DurableFile(path)
    assert path.read_bytes() == b"already here"

    fresh = tmp_path / "fresh.dcm"
    with DurableFile(fresh) as handle:
        handle.write(b"data")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_an_error_while_writing_leaves_no_partial_file(tmp_path):
    path = tmp_path / "object.dcm"
    with pytest.raises(RuntimeError), DurableFile(path) as handle:
        handle.write(b"z" * (BUFFER_BYTES + 10))  # one buffer already on disk
        raise RuntimeError("the peer went away")
    assert not path.exists()


def test_other_write_errors_are_raised_and_the_file_removed(tmp_path, monkeypatch):
    def full(descriptor, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "write", full)
    path = tmp_path / "object.dcm"
    with pytest.raises(OSError, match="No space"), DurableFile(path) as handle:
        handle.write(b"q" * 10)
    assert not path.exists()


@linux
def test_sync_paths_syncs_each_file_and_each_folder_once(tmp_path, fsynced):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [tmp_path / "a" / "1", tmp_path / "a" / "2", tmp_path / "b" / "3"]
    for path in files:
        path.write_bytes(b"content")
    sync_paths(files)
    assert fsynced == [*files, tmp_path / "a", tmp_path / "b"]


def _resident_pages(path: Path) -> int:
    """How many of the file's pages the page cache holds (mincore(2))."""
    size = path.stat().st_size
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with path.open("rb") as fp:
        # A private mapping: writable for ctypes, and reading none of it.
        mapped = mmap.mmap(fp.fileno(), size, access=mmap.ACCESS_COPY)
    anchor = ctypes.c_char.from_buffer(mapped)
    try:
        address = ctypes.c_void_p(ctypes.addressof(anchor))
        if libc.mincore(address, ctypes.c_size_t(size), vector):
            raise OSError(ctypes.get_errno(), "mincore failed")
    finally:
        del anchor
        mapped.close()
    return sum(flag & 1 for flag in vector)


@pytest.fixture
def drops_pages(tmp_path) -> None:
    """Skip where the file system keeps a synced file's pages when told they are
    not needed (tmpfs: there they are the file)."""
    control = tmp_path / "control"
    control.write_bytes(_content(64 * 1024))
    descriptor = os.open(control, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
    if _resident_pages(control):
        pytest.skip("this file system keeps the pages of a synced file")


@linux
def test_a_durable_file_leaves_the_page_cache_once_on_disk(tmp_path, drops_pages):
    kept = tmp_path / "kept.dcm"
    kept.write_bytes(_content(300_000))
    assert _resident_pages(kept) > 0  # an ordinary write stays, so the test can tell
    now = tmp_path / "now.dcm"
    with DurableFile(now) as handle:
        handle.write(_content(300_000))
    assert _resident_pages(now) == 0
    later = [tmp_path / f"later-{i}.dcm" for i in range(3)]
    for path in later:
        with DurableFile(path, sync=False) as handle:
            handle.write(_content(300_000))
    sync_paths(later)
    assert [_resident_pages(path) for path in later] == [0, 0, 0]
    assert all(path.read_bytes() == _content(300_000) for path in later)


@linux
def test_each_record_leaves_the_page_cache_once_on_disk(tmp_path, drops_pages):
    path = tmp_path / "batch.dcms"
    with RecordFile(path) as batch:
        batch.append([_content(200_000)])
        batch.append([b"x" * 5000, _content(100_000)])
        assert _resident_pages(path) == 0
    assert path.read_bytes() == _content(200_000) + b"x" * 5000 + _content(100_000)


@linux
def test_pages_are_dropped_only_after_the_sync(tmp_path, monkeypatch):
    """Dropping pages first would only start their writeback: the order matters."""
    events = []
    real_fsync, real_fdatasync, real_advise = os.fsync, os.fdatasync, os.posix_fadvise
    monkeypatch.setattr(
        durable.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1]
    )
    monkeypatch.setattr(
        durable.os,
        "fdatasync",
        lambda fd: (events.append("fdatasync"), real_fdatasync(fd))[1],
    )
    monkeypatch.setattr(
        durable,
        "_advise",
        lambda fd, *a: (events.append("drop"), real_advise(fd, *a))[1],
    )
    with DurableFile(tmp_path / "now.dcm") as handle:
        handle.write(b"a" * 5000)
    assert events == ["fsync", "drop"]
    events.clear()
    with DurableFile(tmp_path / "later.dcm", sync=False) as handle:
        handle.write(b"b" * 5000)
    assert events == ["drop"]  # its writeback starts; sync_paths syncs it
    events.clear()
    sync_paths([tmp_path / "later.dcm"])
    assert events == ["fsync", "drop", "fsync"]  # the file, its pages, the folder
    events.clear()
    with RecordFile(tmp_path / "batch.dcms") as batch:
        batch.append([b"c" * 5000])
    assert events == ["fdatasync", "drop"]


@pytest.mark.parametrize("size", SIZES)
def test_the_digest_is_of_the_bytes_written(tmp_path, size):
    data = _content(size)
    with DurableFile(tmp_path / "object.dcm", digest=True) as handle:
        handle.write(data)
    assert handle.digest == (hashlib.sha256(data).hexdigest(), size)
    assert (tmp_path / "object.dcm").read_bytes() == data


def test_the_digest_is_there_only_once_closed(tmp_path):
    handle = DurableFile(tmp_path / "open.dcm", digest=True)
    handle.write(b"abc")
    with pytest.raises(ValueError, match="closed"):
        handle.digest  # noqa: B018
    handle.close()
    assert handle.digest[1] == 3
    with DurableFile(tmp_path / "plain.dcm") as plain:
        plain.write(b"abc")
    with pytest.raises(ValueError, match="digest=True"):
        plain.digest  # noqa: B018


def test_a_durable_file_seeks_only_to_where_it_is(tmp_path):
    with DurableFile(tmp_path / "x.bin") as handle:
        handle.write(b"abc")
        assert handle.seek(3) == 3 and handle.tell() == 3
        assert handle.seek(0, os.SEEK_CUR) == 3
        with pytest.raises(OSError, match="forward"):
            handle.seek(0)


@pytest.mark.parametrize("size", [4097, BUFFER_BYTES + 10])
def test_files_open_at_once_never_share_a_buffer(tmp_path, size):
    """More files open than spare buffers, then as many again reusing them with
    less in each: every file holds its own bytes, none of another's."""

    def write_all(prefix: str, length: int) -> None:
        handles = [
            DurableFile(tmp_path / f"{prefix}{i}.dcm", sync=False) for i in range(8)
        ]
        for i, handle in enumerate(handles):
            handle.write(bytes([i]) * length)
        for handle in handles:
            handle.close()

    write_all("first-", size)
    write_all("again-", size // 2)
    for i in range(8):
        assert (tmp_path / f"first-{i}.dcm").read_bytes() == bytes([i]) * size
        assert (tmp_path / f"again-{i}.dcm").read_bytes() == bytes([i]) * (size // 2)


# -- RecordFile: one file, records appended, each durable on return -----------------


def test_records_go_one_after_another(tmp_path):
    path = tmp_path / "batch.dcms"
    sizes = [10_000, 0, 4096, BUFFER_BYTES + 5, 1]
    records = [_content(size)[::-1] for size in sizes]
    with RecordFile(path) as batch:
        # Chunks of any shape: bytes, views, several per record, empty ones.
        places = [
            batch.append([memoryview(data)[:7], b"", data[7:]]) for data in records
        ]
    assert [length for _, length in places] == sizes
    ends = [10_000, 10_000, 14_096, 14_096 + BUFFER_BYTES + 5]
    assert [at for at, _ in places] == [0, *ends]
    assert path.read_bytes() == b"".join(records)


def test_a_record_is_whole_however_little_each_write_takes(tmp_path, monkeypatch):
    """The kernel may take part of a vectored write; the rest follows, the chunk
    the write stopped in cut where it stopped."""
    real = os.pwritev
    calls = []

    def stingy(descriptor, buffers, offset):
        calls.append(len(buffers))
        taken, budget = [], 3000
        for buffer in buffers:
            if not budget:
                break
            taken.append(memoryview(buffer)[:budget])
            budget -= len(taken[-1])
        return real(descriptor, taken, offset)

    monkeypatch.setattr(durable.os, "pwritev", stingy)
    chunks = [_content(1000), _content(2500)[::-1], _content(7000)]
    with RecordFile(tmp_path / "batch.dcms") as batch:
        assert batch.append([b"head"]) == (0, 4)
        assert batch.append(chunks) == (4, 10_500)
    assert (tmp_path / "batch.dcms").read_bytes() == b"head" + b"".join(chunks)
    assert len(calls) == 1 + 4  # 3000 bytes a write: 10,500 bytes in four


def test_a_record_of_more_chunks_than_a_write_takes(tmp_path):
    chunks = [bytes([i % 256]) * 3 for i in range(2500)]  # IOV_MAX is 1024
    with RecordFile(tmp_path / "batch.dcms") as batch:
        assert batch.append(chunks) == (0, 7500)
    assert (tmp_path / "batch.dcms").read_bytes() == b"".join(chunks)


@linux
def test_each_record_is_on_disk_before_append_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync

    def recording(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_size)
        real(descriptor)

    monkeypatch.setattr(durable.os, "fdatasync", recording)
    with RecordFile(tmp_path / "batch.dcms") as batch:
        batch.append([b"a" * 5000])
        assert synced == [5000]
        batch.append([b"b" * 100])
        assert synced == [5000, 5100]


def test_a_failed_append_keeps_the_records_before_it(tmp_path, monkeypatch):
    path = tmp_path / "batch.dcms"
    real = os.pwritev
    failing = {"on": False}

    def full(descriptor, buffers, offset):
        if failing["on"]:
            real(descriptor, [memoryview(buffers[0])[:100]], offset)  # a part went
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(descriptor, buffers, offset)

    monkeypatch.setattr(durable.os, "pwritev", full)
    batch = RecordFile(path)
    first = batch.append([b"first"])
    failing["on"] = True
    with pytest.raises(OSError, match="No space"):
        batch.append([b"lost" * 2000])
    failing["on"] = False
    third = batch.append([b"third"])
    batch.close()
    assert third == (5, 5)  # where the failed one would have gone
    raw = path.read_bytes()
    assert raw[first[0] : first[0] + 5] == b"first"
    assert raw[5:10] == b"third"
    with pytest.raises(ValueError, match="closed"):
        batch.append([b"late"])


def test_a_record_file_is_new_private_and_removed_by_an_error(tmp_path):
    path = tmp_path / "batch.dcms"
    path.write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        RecordFile(path)
    fresh = tmp_path / "fresh.dcms"
    with pytest.raises(RuntimeError), RecordFile(fresh) as batch:
        batch.append([b"x"])
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
        raise RuntimeError("the listener stops")
    assert not fresh.exists()
