"""What a cut-short bag still holds: the storage files of a killed or crashed recorder, read in
file order up to the break.

A recorder that dies leaves an mcap file without its summary and footer (``rosbags`` needs
them to open it), or an sqlite3 file whose header counts pages that were never written (sqlite
calls it malformed), and often no ``metadata.yaml``. Both still hold every message written
before the break: mcap records are self-delimiting, and sqlite reads its rows in insertion order
once told to trust the file's real size (``PRAGMA writable_schema``, read-only here).

:class:`Salvage` scans once on opening (topics, counts, time span, where and why it stops) and
streams the same messages again on demand, ending where the scan ended.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MCAP_MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _FOOTER, _DATA_END = 0x03, 0x04, 0x05, 0x06, 0x02, 0x0F

#: (topic, msgtype, log time ns, CDR bytes)
Record = tuple[str, str, int, bytes]


class Break(Exception):
    """Where and why a storage file stops being readable."""


@dataclass
class Salvage:
    """The readable messages of one bag's storage files, in file order."""

    files: Sequence[Path]
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)  # topic -> (type, count)
    start_ns: int = 0
    end_ns: int = 0  # after the last message, as rosbags counts it
    message_count: int = 0
    problem: str | None = None  # None: every file reads to its end

    def __post_init__(self) -> None:
        first, last = None, None
        try:
            for topic, msgtype, log_ns, _ in self._records():
                kind, count = self.topics.get(topic, (msgtype, 0))
                self.topics[topic] = (kind, count + 1)
                self.message_count += 1
                first = log_ns if first is None else min(first, log_ns)
                last = log_ns if last is None else max(last, log_ns)
        except Break as exc:
            self.problem = str(exc)
        self.start_ns = first if first is not None else 0
        self.end_ns = last + 1 if last is not None else 0

    def messages(self, topics: set[str] | None = None) -> Iterator[Record]:
        """The messages the scan found, then Break when it found a break."""
        for record in self._records():
            if topics is None or record[0] in topics:
                yield record

    def _records(self) -> Iterator[Record]:
        for path in self.files:
            if path.suffix == ".db3":
                yield from _sqlite_records(path)
            else:
                yield from _mcap_records(path)


# ----------------------------------------------------------------------------- mcap
def _string(body: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + length
    return body[pos + 4 : end].decode("utf-8", "replace"), end


def _top_level(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(opcode, body, offset) of each record up to DataEnd or the footer; Break when cut."""
    with path.open("rb") as handle:
        if handle.read(8) != MCAP_MAGIC:
            raise Break(f"{path.name} is not an mcap file (no mcap magic at its start)")
        offset = 8
        while True:
            head = handle.read(9)
            if not head:
                raise Break(f"{path.name} ends at byte {offset} without its summary and footer "
                            "(the recorder did not close it)")
            if len(head) < 9:
                raise Break(f"{path.name} is cut inside a record header at byte {offset}")
            op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            body = handle.read(length)
            if len(body) < length:
                raise Break(f"{path.name} is cut at byte {offset + 9 + len(body)}, inside a "
                            f"record of {length} bytes that starts at byte {offset}")
            if op in (_DATA_END, _FOOTER):
                return
            yield op, body, offset
            offset += 9 + length


def _inner(chunk: bytes, offset: int, name: str) -> Iterator[tuple[int, bytes]]:
    """The records of a chunk, decompressed and checked."""
    from rosbags.rosbag2.storage_mcap import decompress

    try:
        _, _, size, crc = struct.unpack_from("<QQQI", chunk, 0)
        compression, pos = _string(chunk, 28)
        (length,) = struct.unpack_from("<Q", chunk, pos)
        data = decompress(chunk[pos + 8 : pos + 8 + length], compression, size, crc)
    except Exception as exc:  # a damaged chunk: struct, zstd/lz4 or rosbags errors
        raise Break(f"{name}: the chunk at byte {offset} does not decompress "
                    f"({type(exc).__name__}: {exc})") from None
    pos = 0
    while pos + 9 <= len(data):
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        yield op, data[pos + 9 : pos + 9 + length]
        pos += 9 + length


def _mcap_records(path: Path) -> Iterator[Record]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def handle(op: int, body: bytes) -> tuple[int, Record] | None:
        if op == _SCHEMA:
            (sid,) = struct.unpack_from("<H", body, 0)
            schemas[sid] = _string(body, 2)[0]
        elif op == _CHANNEL:
            cid, sid = struct.unpack_from("<HH", body, 0)
            channels[cid] = (_string(body, 4)[0], schemas.get(sid, ""))
        elif op == _MESSAGE and len(body) >= 22:
            cid, _, log_ns = struct.unpack_from("<HIQ", body, 0)
            if cid in channels:
                topic, msgtype = channels[cid]
                return log_ns, (topic, msgtype, int(log_ns), body[22:])
        return None

    for op, body, offset in _top_level(path):
        if op != _CHUNK:
            if (found := handle(op, body)) is not None:
                yield found[1]
            continue
        found_in_chunk = [m for o, b in _inner(body, offset, path.name)
                          if (m := handle(o, b)) is not None]  # fmt: skip
        found_in_chunk.sort(key=lambda item: item[0])  # a chunk is read in log-time order
        yield from (record for _, record in found_in_chunk)


# ----------------------------------------------------------------------------- sqlite3
def _sqlite_records(path: Path) -> Iterator[Record]:
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if wal else "&immutable=1")
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise Break(f"{path.name} cannot be opened: {exc}") from None
    try:
        connection.execute("PRAGMA writable_schema=ON")  # trust the real file size, read only
        try:
            topics = {tid: (name, kind) for tid, name, kind in
                      connection.execute("SELECT id, name, type FROM topics")}  # fmt: skip
            rows = connection.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
        except sqlite3.Error as exc:
            raise Break(f"{path.name}: its topics cannot be read ({exc})") from None
        while True:
            try:
                row = rows.fetchone()
            except sqlite3.Error as exc:
                raise Break(f"{path.name} is cut short or damaged ({exc})") from None
            if row is None:
                return
            topic_id, log_ns, data = row
            if topic_id in topics:
                yield topics[topic_id][0], topics[topic_id][1], int(log_ns), bytes(data)
    finally:
        connection.close()


def storage_files(folder: Path, listed: Sequence[str] = ()) -> list[Path]:
    """A bag folder's storage files: those ``metadata.yaml`` lists when it can, else every
    ``.mcap``/``.db3`` in name order (``bag_0``, ``bag_1``, ... as rosbag2 splits them)."""
    if listed:
        return [folder / Path(name).name for name in listed if (folder / Path(name).name).is_file()]
    files = [p for p in folder.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file()]

    def split_index(p: Path) -> tuple[str, int, str]:
        stem, _, index = p.stem.rpartition("_")
        return (stem, int(index), p.suffix) if index.isdigit() else (p.stem, -1, p.suffix)

    return sorted(files, key=split_index)
