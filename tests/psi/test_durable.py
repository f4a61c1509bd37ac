"""New files written durably around the page cache (psi.durable)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from psi import durable
from psi.durable import BUFFER_BYTES, DurableFile, RecordFile, sync_paths

#: Tests that read the kernel's view of a descriptor (/proc) or set O_DIRECT.
linux = pytest.mark.skipif(
    not hasattr(os, "O_DIRECT") or not Path("/proc/self/fdinfo").exists(),
    reason="needs Linux (O_DIRECT, /proc)",
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


@linux
def _skip_without_o_direct(folder: Path) -> None:
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError:
        pytest.skip("this file system refuses O_DIRECT")


def test_writes_go_around_the_page_cache_where_the_file_system_allows(tmp_path):
    _skip_without_o_direct(tmp_path)
    with DurableFile(tmp_path / "object.dcm") as handle:
        flags = int(Path(f"/proc/self/fdinfo/{handle._fd}").read_text().split()[3], 8)
        assert flags & os.O_DIRECT
        handle.write(_content(10_000))
    assert (tmp_path / "object.dcm").read_bytes() == _content(10_000)


@linux
def test_a_file_system_refusing_o_direct_at_open_gets_ordinary_writes(
    tmp_path, monkeypatch
):
    real_open = os.open

    def refusing(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(durable.os, "open", refusing)
    data = _content(BUFFER_BYTES + 4321)
    with DurableFile(tmp_path / "object.dcm") as handle:
        handle.write(data)
    assert (tmp_path / "object.dcm").read_bytes() == data


@linux
def test_a_file_system_refusing_o_direct_writes_gets_ordinary_writes(
    tmp_path, monkeypatch
):
    _skip_without_o_direct(tmp_path)
    real_write = os.write
    refused = []

    def refusing(descriptor, data):
        flags = int(Path(f"/proc/self/fdinfo/{descriptor}").read_text().split()[3], 8)
        if flags & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(descriptor, data)

    monkeypatch.setattr(durable.os, "write", refusing)
    data = _content(2 * BUFFER_BYTES + 99)
    with DurableFile(tmp_path / "object.dcm") as handle:
        handle.write(data)
    assert (tmp_path / "object.dcm").read_bytes() == data
    assert refused == [BUFFER_BYTES]  # tried once, then the ordinary way for good


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


def test_a_platform_without_o_direct_writes_the_ordinary_way(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "_O_DIRECT", 0)  # macOS has no such flag
    data = _content(BUFFER_BYTES + 777)
    with DurableFile(tmp_path / "object.dcm") as handle:
        handle.write(data)
        assert not handle._direct
    assert (tmp_path / "object.dcm").read_bytes() == data


@pytest.mark.parametrize("size", SIZES)
def test_the_digest_is_of_the_bytes_written_not_of_the_padding(tmp_path, size):
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
def test_many_files_open_at_once_give_their_buffers_back(tmp_path, size):
    """More files than spare buffers, closed together: each buffer is handed back
    or closed, with no view of it left behind (a view would make closing it
    fail)."""
    handles = [DurableFile(tmp_path / f"{i}.dcm", sync=False) for i in range(8)]
    for handle in handles:
        handle.write(_content(size))
    for handle in handles:
        handle.close()
    assert all((tmp_path / f"{i}.dcm").read_bytes() == _content(size) for i in range(8))


# -- RecordFile: one file, records appended, each durable on return -----------------


def test_records_go_one_after_another_on_block_boundaries(tmp_path):
    path = tmp_path / "batch.dcms"
    sizes = [10_000, 0, 4096, BUFFER_BYTES + 5, 1]
    records = [_content(size)[::-1] for size in sizes]
    with RecordFile(path) as batch:
        # Chunks of any shape: bytes, views, several per record.
        places = [batch.append([memoryview(data)[:7], data[7:]]) for data in records]
    raw = path.read_bytes()
    assert [length for _, length in places] == sizes
    assert [raw[at : at + length] for at, length in places] == records
    offsets = [at for at, _ in places]
    # Each from the block after the one before (an empty record takes none).
    assert offsets == [0, 12288, 12288, 16384, 16384 + BUFFER_BYTES + 4096]
    # Between records, zeros only.
    ends = [at + length for at, length in places]
    for end, at in zip(ends, offsets[1:] + [len(raw)], strict=True):
        assert raw[end:at] == bytes(at - end)


def test_the_padding_never_carries_bytes_of_an_earlier_file(tmp_path):
    secret = b"S" * (BUFFER_BYTES - 100)
    with RecordFile(tmp_path / "first.dcms") as first:
        first.append([secret])
    with RecordFile(tmp_path / "second.dcms") as second:  # the same spare buffer
        second.append([b"short"])
    assert (tmp_path / "second.dcms").read_bytes() == b"short" + bytes(4091)


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
        assert synced == [8192]
        batch.append([b"b" * 100])
        assert synced == [8192, 12288]


def test_a_failed_append_keeps_the_records_before_it(tmp_path, monkeypatch):
    path = tmp_path / "batch.dcms"
    real = os.pwrite
    failing = {"on": False}

    def full(descriptor, data, offset):
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(descriptor, data, offset)

    monkeypatch.setattr(durable.os, "pwrite", full)
    batch = RecordFile(path)
    first = batch.append([b"first"])
    failing["on"] = True
    with pytest.raises(OSError, match="No space"):
        batch.append([b"lost" * 2000])
    failing["on"] = False
    third = batch.append([b"third"])
    batch.close()
    assert third == (4096, 5)  # where the failed one would have gone
    raw = path.read_bytes()
    assert raw[first[0] : first[0] + 5] == b"first"
    assert raw[4096 : 4096 + 5] == b"third"
    with pytest.raises(ValueError, match="closed"):
        batch.append([b"late"])


@linux
def test_a_record_file_refusing_o_direct_writes_the_ordinary_way(tmp_path, monkeypatch):
    _skip_without_o_direct(tmp_path)
    real = os.pwrite
    refused = []

    def refusing(descriptor, data, offset):
        flags = int(Path(f"/proc/self/fdinfo/{descriptor}").read_text().split()[3], 8)
        if flags & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(descriptor, data, offset)

    monkeypatch.setattr(durable.os, "pwrite", refusing)
    data = _content(BUFFER_BYTES + 3)
    with RecordFile(tmp_path / "batch.dcms") as batch:
        assert batch.append([data]) == (0, len(data))
        assert batch.append([b"next"]) == (BUFFER_BYTES + 4096, 4)
    raw = (tmp_path / "batch.dcms").read_bytes()
    assert raw[: len(data)] == data
    assert refused == [0]


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
