# cython: boundscheck=False, wraparound=False, cdivision=True
"""Rows in PostgreSQL's binary COPY format, encoded in compiled code.

The writer's pure-Python path builds a tuple per row (rows.span_values,
rows.stage_values, ...) and has psycopg format it value by value. This
module writes the same rows straight into COPY's binary form: a span's or a
stage's fields are read once from its SpanRow or StageRow, each row becomes
one bytes object (its `_Item.values`), and a table's rows go to COPY as a
few large blocks with the file header and trailer (psycopg passes blocks
through untouched, `Copy.write`).

Every value is stored exactly as through psycopg: int2/int4/int8 big-endian,
float8 as IEEE 754 bits, text as UTF-8, timestamptz as microseconds since
2000-01-01 (floor of the nanoseconds), jsonb as version 1 + orjson's text
(the json module for what orjson refuses, rows.dump_json), bytea[] as a
one-dimensional array without NULLs, None as NULL. A stage's last column,
e2e_ms, is not in its encoded row: it is set in the transaction (`Item.e2e`)
and appended when the block is written.

Besides the rows, the writer's other per-row work that pays to compile:
array query parameters (EncodedArray), stage dedupe keys (BLAKE2b-128), a
batch's time bounds, and a group's flow-rollup sums (add_stages,
count_e2e). Each has its pure-Python twin in items.py, the path taken when
this module is not built.

tests/collector/test_binrows.py stores awkward rows through both paths and
compares them column by column, and holds the compiled rollup sums to the
Python ones.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AsDouble
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

import types

import orjson

from collector.batch import SpanRow, StageRow
from collector.writer.rows import dump_json

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

cdef object _dumps = orjson.dumps

cdef int64_t _PG_EPOCH_US = 946684800LL * 1000000LL
cdef unsigned int _BYTEA_OID = 17
# The COPY file header: signature, flags, header extension length.
cdef bytes _SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
cdef bytes _TRAILER = b"\xff\xff"
cdef Py_ssize_t _MAX_FIELD = 0x3FFFFFFF  # PostgreSQL's limit for one value (1 GiB)

# Column type codes for encode_values().
INT2, INT4, INT8, FLOAT8, BOOL, TEXT, BYTEA = range(1, 8)
CODES = {"int2": INT2, "int4": INT4, "int8": INT8, "float8": FLOAT8, "bool": BOOL,
         "text": TEXT, "bytea": BYTEA}

SPAN_FIELDS = 16
STAGE_FIELDS = 21  # e2e_ms, the last, is written with the block (copy_block)


cdef class Item:
    """One row on its way in: the source object, its pending request, its
    dedupe key (stages, log records), its time and its encoded COPY row."""

    cdef public object row, pending, key, time_ns, values
    cdef public object e2e  # a stage's e2e_ms, set in the transaction

    def __init__(self, row, pending, key, time_ns, values):
        self.row = row
        self.pending = pending
        self.key = key
        self.time_ns = time_ns
        self.values = values
        self.e2e = None


# ---- reading SpanRow and StageRow fields -------------------------------------------
# Both are slots dataclasses: a field is a pointer at a fixed offset in the
# object, which a member descriptor reads after a type lookup for every
# access (some 150 instructions). Rows of exactly these classes are read at
# the offsets their descriptors give; anything else through getattr.

cdef Py_ssize_t _offset(cls, str name) except -1:
    descriptor = cls.__dict__.get(name)
    if type(descriptor) is not types.MemberDescriptorType:
        raise TypeError(f"{cls.__name__}.{name} is not a slot")
    return (<PyMemberDescrObject *><PyObject *>descriptor).d_member.offset


cdef inline object _at(object row, bint direct, Py_ssize_t offset, str name):
    cdef PyObject *value
    if not direct:
        return getattr(row, name)
    value = (<PyObject **>((<char *><PyObject *>row) + offset))[0]
    if value == NULL:
        return getattr(row, name)  # unset: AttributeError, as Python says it
    return <object>value


cdef object _SpanRow = SpanRow
cdef object _StageRow = StageRow
cdef Py_ssize_t SP_PROJECT = _offset(SpanRow, "project_id")
cdef Py_ssize_t SP_TRACE = _offset(SpanRow, "trace_id")
cdef Py_ssize_t SP_SPAN = _offset(SpanRow, "span_id")
cdef Py_ssize_t SP_PARENT = _offset(SpanRow, "parent_span_id")
cdef Py_ssize_t SP_START = _offset(SpanRow, "start_time_ns")
cdef Py_ssize_t SP_DURATION = _offset(SpanRow, "duration_ns")
cdef Py_ssize_t SP_SERVICE = _offset(SpanRow, "service")
cdef Py_ssize_t SP_NAME = _offset(SpanRow, "name")
cdef Py_ssize_t SP_KIND = _offset(SpanRow, "kind")
cdef Py_ssize_t SP_STATUS = _offset(SpanRow, "status_code")
cdef Py_ssize_t SP_MESSAGE = _offset(SpanRow, "status_message")
cdef Py_ssize_t SP_ATTRIBUTES = _offset(SpanRow, "attributes")
cdef Py_ssize_t SP_RESOURCE = _offset(SpanRow, "resource")
cdef Py_ssize_t SP_EVENTS = _offset(SpanRow, "events")
cdef Py_ssize_t SP_LINKS = _offset(SpanRow, "links")
cdef Py_ssize_t SP_SCOPE = _offset(SpanRow, "scope")
cdef Py_ssize_t ST_PROJECT = _offset(StageRow, "project_id")
cdef Py_ssize_t ST_TIME = _offset(StageRow, "time_ns")
cdef Py_ssize_t ST_STAGE = _offset(StageRow, "stage")
cdef Py_ssize_t ST_ROLE = _offset(StageRow, "role")
cdef Py_ssize_t ST_SERVICE = _offset(StageRow, "service")
cdef Py_ssize_t ST_SYSTEM = _offset(StageRow, "system")
cdef Py_ssize_t ST_CHANNEL = _offset(StageRow, "channel")
cdef Py_ssize_t ST_GROUP = _offset(StageRow, "consumer_group")
cdef Py_ssize_t ST_TRACE = _offset(StageRow, "trace_id")
cdef Py_ssize_t ST_SPAN = _offset(StageRow, "span_id")
cdef Py_ssize_t ST_PARENT = _offset(StageRow, "parent_span_id")
cdef Py_ssize_t ST_LINKED = _offset(StageRow, "linked")
cdef Py_ssize_t ST_EVENT_ID = _offset(StageRow, "event_id")
cdef Py_ssize_t ST_SOURCE = _offset(StageRow, "event_source")
cdef Py_ssize_t ST_TYPE = _offset(StageRow, "event_type")
cdef Py_ssize_t ST_ERROR = _offset(StageRow, "error")
cdef Py_ssize_t ST_DURATION = _offset(StageRow, "duration_ms")
cdef Py_ssize_t ST_ORIGIN = _offset(StageRow, "origin")


# ---- a growable buffer ------------------------------------------------------------

cdef struct Buf:
    char *data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(Buf *b, Py_ssize_t more) except -1:
    cdef Py_ssize_t need = b.size + more
    cdef Py_ssize_t cap
    cdef char *data
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < need:
        cap *= 2
    data = <char *>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline void _be16(char *p, int v) noexcept:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)


cdef inline void _be32(char *p, long long v) noexcept:
    p[0] = <char>((v >> 24) & 0xFF)
    p[1] = <char>((v >> 16) & 0xFF)
    p[2] = <char>((v >> 8) & 0xFF)
    p[3] = <char>(v & 0xFF)


cdef inline void _be64(char *p, uint64_t v) noexcept:
    cdef int i
    for i in range(8):
        p[i] = <char>((v >> (56 - 8 * i)) & 0xFF)


cdef inline int _put_count(Buf *b, int fields) except -1:
    _reserve(b, 2)
    _be16(b.data + b.size, fields)
    b.size += 2
    return 0


cdef inline int _put_null(Buf *b) except -1:
    _reserve(b, 4)
    _be32(b.data + b.size, -1)
    b.size += 4
    return 0


cdef int _put_raw(Buf *b, const char *p, Py_ssize_t n, const char *prefix, Py_ssize_t np) except -1:
    """One field: its length, then `prefix` and `p`."""
    if n + np > _MAX_FIELD:
        raise ValueError(f"a value of {n + np} bytes is larger than PostgreSQL takes")
    _reserve(b, 4 + np + n)
    _be32(b.data + b.size, n + np)
    b.size += 4
    if np:
        memcpy(b.data + b.size, prefix, np)
        b.size += np
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef int _put_text(Buf *b, object value) except -1:
    cdef Py_ssize_t n
    cdef const char *p
    if value is None:
        return _put_null(b)
    if not isinstance(value, str):
        raise TypeError(f"a text column got {type(value).__name__}, not str")
    p = PyUnicode_AsUTF8AndSize(value, &n)
    return _put_raw(b, p, n, NULL, 0)


cdef int _put_bytes(Buf *b, object value) except -1:
    if value is None:
        return _put_null(b)
    if type(value) is not bytes:
        value = bytes(value)  # bytearray, memoryview
    return _put_raw(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL, 0)


cdef int _put_int(Buf *b, object value, int width) except -1:
    cdef long long v
    if value is None:
        return _put_null(b)
    v = PyLong_AsLongLong(value)
    if width == 2:
        if not -32768 <= v <= 32767:
            raise OverflowError(f"{v} is out of range for int2")
        _reserve(b, 6)
        _be32(b.data + b.size, 2)
        _be16(b.data + b.size + 4, <int>v)
        b.size += 6
    elif width == 4:
        if not -2147483648LL <= v <= 2147483647LL:
            raise OverflowError(f"{v} is out of range for int4")
        _reserve(b, 8)
        _be32(b.data + b.size, 4)
        _be32(b.data + b.size + 4, v)
        b.size += 8
    else:
        _reserve(b, 12)
        _be32(b.data + b.size, 8)
        _be64(b.data + b.size + 4, <uint64_t>v)
        b.size += 12
    return 0


cdef int _put_float8(Buf *b, object value) except -1:
    cdef double d
    cdef uint64_t bits
    if value is None:
        return _put_null(b)
    d = PyFloat_AsDouble(value)
    memcpy(&bits, &d, 8)
    _reserve(b, 12)
    _be32(b.data + b.size, 8)
    _be64(b.data + b.size + 4, bits)
    b.size += 12
    return 0


cdef int _put_bool(Buf *b, object value) except -1:
    if value is None:
        return _put_null(b)
    _reserve(b, 5)
    _be32(b.data + b.size, 1)
    b.data[b.size + 4] = 1 if value else 0
    b.size += 5
    return 0


cdef int _put_timestamptz(Buf *b, object time_ns) except -1:
    cdef long long ns = PyLong_AsLongLong(time_ns)
    cdef long long us = ns // 1000
    if ns % 1000 < 0:
        us -= 1  # floor, as Python's //
    _reserve(b, 12)
    _be32(b.data + b.size, 8)
    _be64(b.data + b.size + 4, <uint64_t>(us - _PG_EPOCH_US))
    b.size += 12
    return 0


cdef int _put_jsonb(Buf *b, object value) except -1:
    """Binary jsonb of `value`; an empty or None value is NULL."""
    cdef bytes text
    if not value:
        return _put_null(b)
    try:
        text = _dumps(value)
    except TypeError:
        text = dump_json(value)
    return _put_raw(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), b"\x01", 1)


cdef int _put_bytea_array(Buf *b, list pairs, int index) except -1:
    """A bytea[] of element `index` of each (trace id, span id) pair; [] is NULL."""
    cdef Py_ssize_t count = PyList_GET_SIZE(pairs)
    cdef Py_ssize_t i, total = 20, start
    cdef object element
    if not count:
        return _put_null(b)
    start = b.size
    _reserve(b, 24)
    b.size += 4  # the field's length, set below
    _be32(b.data + b.size, 1)  # dimensions
    _be32(b.data + b.size + 4, 0)  # no NULLs
    _be32(b.data + b.size + 8, _BYTEA_OID)
    _be32(b.data + b.size + 12, count)
    _be32(b.data + b.size + 16, 1)  # lower bound
    b.size += 20
    for i in range(count):
        element = (<tuple>PyList_GET_ITEM(pairs, i))[index]
        if type(element) is not bytes:
            element = bytes(element)
        _put_raw(b, PyBytes_AS_STRING(element), PyBytes_GET_SIZE(element), NULL, 0)
        total += 4 + PyBytes_GET_SIZE(element)
    if total > _MAX_FIELD:
        raise ValueError(f"an array of {total} bytes is larger than PostgreSQL takes")
    _be32(b.data + start, total)
    return 0


cdef inline bytes _take(Buf *b):
    cdef bytes out = PyBytes_FromStringAndSize(b.data, b.size)
    b.size = 0
    return out


# ---- spans ------------------------------------------------------------------------

cdef int _span(Buf *b, s, dict resources) except -1:
    cdef bint d = type(s) is _SpanRow
    cdef object resource = _at(s, d, SP_RESOURCE, "resource")
    cdef object encoded
    cdef Py_ssize_t start
    _put_count(b, SPAN_FIELDS)
    _put_int(b, _at(s, d, SP_PROJECT, "project_id"), 4)
    _put_bytes(b, _at(s, d, SP_TRACE, "trace_id"))
    _put_bytes(b, _at(s, d, SP_SPAN, "span_id"))
    _put_bytes(b, _at(s, d, SP_PARENT, "parent_span_id"))
    _put_timestamptz(b, _at(s, d, SP_START, "start_time_ns"))
    _put_int(b, _at(s, d, SP_DURATION, "duration_ns"), 8)
    _put_text(b, _at(s, d, SP_SERVICE, "service"))
    _put_text(b, _at(s, d, SP_NAME, "name"))
    _put_int(b, _at(s, d, SP_KIND, "kind"), 2)
    _put_int(b, _at(s, d, SP_STATUS, "status_code"), 2)
    _put_text(b, _at(s, d, SP_MESSAGE, "status_message"))
    _put_jsonb(b, _at(s, d, SP_ATTRIBUTES, "attributes"))
    if not resource:
        _put_null(b)
    else:
        # Every span of one resource shares its dict: encoded once per batch.
        key = id(resource)
        encoded = resources.get(key)
        if encoded is None:
            start = b.size
            _put_jsonb(b, resource)
            resources[key] = PyBytes_FromStringAndSize(b.data + start, b.size - start)
        else:
            _reserve(b, PyBytes_GET_SIZE(encoded))
            memcpy(b.data + b.size, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
            b.size += PyBytes_GET_SIZE(encoded)
    _put_jsonb(b, _at(s, d, SP_EVENTS, "events"))
    _put_jsonb(b, _at(s, d, SP_LINKS, "links"))
    _put_text(b, _at(s, d, SP_SCOPE, "scope"))
    return 0


def span_row(s, dict resources=None) -> bytes:
    """A span's encoded COPY row (rows.span_values, in binary)."""
    cdef Buf b = Buf(NULL, 0, 0)
    try:
        _span(&b, s, {} if resources is None else resources)
        return _take(&b)
    finally:
        PyMem_Free(b.data)


def span_items(list spans, pending, dict resources) -> list:
    """An Item for each span, in order; `resources` memoises resources' encodings."""
    cdef Buf b = Buf(NULL, 0, 0)
    cdef list out = []
    try:
        for s in spans:
            _span(&b, s, resources)
            item = Item.__new__(Item)
            (<Item>item).row = s
            (<Item>item).pending = pending
            (<Item>item).time_ns = _at(s, type(s) is _SpanRow, SP_START, "start_time_ns")
            (<Item>item).values = _take(&b)
            out.append(item)
        return out
    finally:
        PyMem_Free(b.data)


def span_item(s, pending, dict resources) -> Item:
    return Item(s, pending, None, s.start_time_ns, span_row(s, resources))


# ---- stages -----------------------------------------------------------------------

cdef int _stage(Buf *b, s, bytes key) except -1:
    cdef bint d = type(s) is _StageRow
    cdef object linked = _at(s, d, ST_LINKED, "linked")
    _put_count(b, STAGE_FIELDS)
    _put_int(b, _at(s, d, ST_PROJECT, "project_id"), 4)
    _put_timestamptz(b, _at(s, d, ST_TIME, "time_ns"))
    _put_bytes(b, key)
    _put_text(b, _at(s, d, ST_STAGE, "stage"))
    _put_text(b, _at(s, d, ST_ROLE, "role"))
    _put_text(b, _at(s, d, ST_SYSTEM, "system"))
    _put_text(b, _at(s, d, ST_CHANNEL, "channel"))
    _put_text(b, _at(s, d, ST_SERVICE, "service"))
    _put_text(b, _at(s, d, ST_GROUP, "consumer_group"))
    _put_bytes(b, _at(s, d, ST_TRACE, "trace_id"))
    _put_bytes(b, _at(s, d, ST_SPAN, "span_id"))
    _put_bytes(b, _at(s, d, ST_PARENT, "parent_span_id"))
    if type(linked) is not list:
        linked = list(linked)
    _put_bytea_array(b, linked, 0)
    _put_bytea_array(b, linked, 1)
    _put_text(b, _at(s, d, ST_EVENT_ID, "event_id"))
    _put_text(b, _at(s, d, ST_SOURCE, "event_source"))
    _put_text(b, _at(s, d, ST_TYPE, "event_type"))
    _put_text(b, _at(s, d, ST_ERROR, "error"))
    _put_float8(b, _at(s, d, ST_DURATION, "duration_ms"))
    _put_int(b, _at(s, d, ST_ORIGIN, "origin"), 2)
    return 0


def stage_row(s, bytes key) -> bytes:
    """A stage's encoded COPY row without e2e_ms (rows.stage_values, in binary)."""
    cdef Buf b = Buf(NULL, 0, 0)
    try:
        _stage(&b, s, key)
        return _take(&b)
    finally:
        PyMem_Free(b.data)


def stage_items(list stages, list keys, pending) -> list:
    """An Item for each stage, with its dedupe key, in order."""
    cdef Buf b = Buf(NULL, 0, 0)
    cdef list out = []
    cdef Py_ssize_t i
    if len(keys) != len(stages):
        raise ValueError("a dedupe key for each stage")
    try:
        for i in range(len(stages)):
            s = stages[i]
            key = keys[i]
            _stage(&b, s, key)
            item = Item.__new__(Item)
            (<Item>item).row = s
            (<Item>item).pending = pending
            (<Item>item).key = key
            (<Item>item).time_ns = _at(s, type(s) is _StageRow, ST_TIME, "time_ns")
            (<Item>item).values = _take(&b)
            out.append(item)
        return out
    finally:
        PyMem_Free(b.data)


def stage_item(s, bytes key, pending) -> Item:
    return Item(s, pending, key, s.time_ns, stage_row(s, key))


# ---- dedupe keys: BLAKE2b with a 16-byte digest (RFC 7693) ------------------------
# hashlib's blake2b costs an object, a keyword call and a digest call a key,
# twice the hashing itself; the same function, written from the RFC, for the
# short inputs of stage keys.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static const uint64_t es_b2_iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
        0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
        0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    static const uint8_t es_b2_sigma[12][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};
    #define ES_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define ES_G(a, b, c, d, x, y) do { \
        a = a + b + (x); d = ES_ROTR(d ^ a, 32); c = c + d; b = ES_ROTR(b ^ c, 24); \
        a = a + b + (y); d = ES_ROTR(d ^ a, 16); c = c + d; b = ES_ROTR(b ^ c, 63); \
    } while (0)
    /* BLAKE2b's compression function F (RFC 7693, 3.2); t below 2**64. */
    static void es_b2_compress(uint64_t h[8], const uint8_t *block, uint64_t t, int last) {
        uint64_t m[16], v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15;
        int i, j;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(m, block, 128);
        (void)j;
    #else
        for (i = 0; i < 16; i++) {
            uint64_t w = 0;
            for (j = 7; j >= 0; j--) w = (w << 8) | block[8 * i + j];  /* little-endian */
            m[i] = w;
        }
    #endif
        v0 = h[0]; v1 = h[1]; v2 = h[2]; v3 = h[3]; v4 = h[4]; v5 = h[5]; v6 = h[6]; v7 = h[7];
        v8 = es_b2_iv[0]; v9 = es_b2_iv[1]; v10 = es_b2_iv[2]; v11 = es_b2_iv[3];
        v12 = es_b2_iv[4] ^ t; v13 = es_b2_iv[5]; v14 = es_b2_iv[6]; v15 = es_b2_iv[7];
        if (last) v14 = ~v14;
        /* Unrolled, every message index is a constant. */
        #pragma GCC unroll 12
        for (i = 0; i < 12; i++) {
            const uint8_t *s = es_b2_sigma[i];
            ES_G(v0, v4, v8, v12, m[s[0]], m[s[1]]);
            ES_G(v1, v5, v9, v13, m[s[2]], m[s[3]]);
            ES_G(v2, v6, v10, v14, m[s[4]], m[s[5]]);
            ES_G(v3, v7, v11, v15, m[s[6]], m[s[7]]);
            ES_G(v0, v5, v10, v15, m[s[8]], m[s[9]]);
            ES_G(v1, v6, v11, v12, m[s[10]], m[s[11]]);
            ES_G(v2, v7, v8, v13, m[s[12]], m[s[13]]);
            ES_G(v3, v4, v9, v14, m[s[14]], m[s[15]]);
        }
        h[0] ^= v0 ^ v8; h[1] ^= v1 ^ v9; h[2] ^= v2 ^ v10; h[3] ^= v3 ^ v11;
        h[4] ^= v4 ^ v12; h[5] ^= v5 ^ v13; h[6] ^= v6 ^ v14; h[7] ^= v7 ^ v15;
    }
    """
    const uint64_t *es_b2_iv
    void es_b2_compress(uint64_t *h, const uint8_t *block, uint64_t t, int last) noexcept


cdef bytes _blake2b_16(const char *data, Py_ssize_t n):
    cdef uint64_t h[8]
    cdef uint8_t block[128]
    cdef uint8_t out[16]
    cdef Py_ssize_t done = 0, rest
    cdef int i
    for i in range(8):
        h[i] = es_b2_iv[i]
    h[0] ^= 0x01010000ULL ^ 16  # fan-out 1, depth 1, no key, 16-byte digest
    while n - done > 128:
        es_b2_compress(h, <const uint8_t *>data + done, <uint64_t>(done + 128), 0)
        done += 128
    rest = n - done
    memset(block, 0, 128)
    if rest:
        memcpy(block, data + done, rest)
    es_b2_compress(h, block, <uint64_t>n, 1)
    for i in range(16):
        out[i] = <uint8_t>((h[i // 8] >> (8 * (i % 8))) & 0xFF)
    return PyBytes_FromStringAndSize(<char *>out, 16)


def blake2b_16(data: bytes) -> bytes:
    """hashlib.blake2b(data, digest_size=16).digest()."""
    return _blake2b_16(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef int _put_plain(Buf *b, object value) except -1:
    """`value`'s bytes (bytes, or str as UTF-8) without a length."""
    cdef Py_ssize_t n
    cdef const char *p
    if isinstance(value, str):
        p = PyUnicode_AsUTF8AndSize(value, &n)
    else:
        if type(value) is not bytes:
            value = bytes(value)
        p = PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
    _reserve(b, n + 1)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef inline int _put_byte(Buf *b, char c) except -1:
    _reserve(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


def stage_keys(list stages) -> list:
    """StageRow.dedupe_key() of each stage."""
    cdef list out = []
    cdef bint d
    cdef Buf b = Buf(NULL, 0, 0)
    try:
        for s in stages:
            d = type(s) is _StageRow
            trace_id = _at(s, d, ST_TRACE, "trace_id")
            span_id = _at(s, d, ST_SPAN, "span_id")
            if _at(s, d, ST_ORIGIN, "origin") == 1 and trace_id and span_id:  # ORIGIN_SPAN
                # b"\x00".join((b"s", trace_id, span_id, stage.encode()))
                b.size = 0
                _put_byte(&b, 115)  # "s"
                _put_byte(&b, 0)
                _put_plain(&b, trace_id)
                _put_byte(&b, 0)
                _put_plain(&b, span_id)
                _put_byte(&b, 0)
                _put_plain(&b, <str>_at(s, d, ST_STAGE, "stage"))
                out.append(_blake2b_16(b.data, b.size))
            else:
                out.append(s.dedupe_key())
        return out
    finally:
        PyMem_Free(b.data)


# ---- any table's value tuples -----------------------------------------------------

cdef int _values(Buf *b, tuple values, tuple codes) except -1:
    cdef Py_ssize_t i, n = len(codes)
    cdef int code
    if len(values) != n:
        raise ValueError(f"a row of {len(values)} values for {n} columns")
    _put_count(b, <int>n)
    for i in range(n):
        value = values[i]
        code = codes[i]
        if code == 6:
            _put_text(b, value)
        elif code == 7:
            _put_bytes(b, value)
        elif code == 2:
            _put_int(b, value, 4)
        elif code == 1:
            _put_int(b, value, 2)
        elif code == 3:
            _put_int(b, value, 8)
        elif code == 4:
            _put_float8(b, value)
        elif code == 5:
            _put_bool(b, value)
        else:
            raise ValueError(f"unknown column type code {code}")
    return 0


def encode_values(tuple values, tuple codes) -> bytes:
    """A row of value tuples (envelopes, log records) encoded for columns of
    type `codes` (CODES of the table's copy_types), as psycopg would."""
    cdef Buf b = Buf(NULL, 0, 0)
    try:
        _values(&b, values, codes)
        return _take(&b)
    finally:
        PyMem_Free(b.data)


def values_item(row, pending, key, time_ns, tuple values, tuple codes) -> Item:
    return Item(row, pending, key, time_ns, encode_values(values, codes))


# ---- COPY blocks ------------------------------------------------------------------

def copy_block(list items, Py_ssize_t start, bint e2e, Py_ssize_t limit=131072):
    """(block, next start): the encoded rows of items[start:] that fit in `limit`
    bytes (at least one row), with COPY's header before the first row and its
    trailer after the last; with `e2e`, each row gets its item's e2e_ms as one
    more column. psycopg hands a block of up to 128 KiB to libpq as it is, and
    copies a larger one in slices."""
    cdef Py_ssize_t n = PyList_GET_SIZE(items)
    cdef Py_ssize_t i = start, size = 0, j, row
    cdef Item item
    cdef bytes values
    cdef char *p
    cdef bytes out
    cdef double d
    cdef uint64_t bits
    # Sized first, then written in place: one allocation a block.
    if start == 0:
        size += PyBytes_GET_SIZE(_SIGNATURE)
    j = start
    while j < n:
        item = <Item>PyList_GET_ITEM(items, j)
        row = PyBytes_GET_SIZE(item.values)
        if e2e:
            row += 4 if item.e2e is None else 12
        if j > start and size + row + 2 > limit:
            break
        size += row
        j += 1
    if j == n:
        size += 2
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    if start == 0:
        memcpy(p, PyBytes_AS_STRING(_SIGNATURE), PyBytes_GET_SIZE(_SIGNATURE))
        p += PyBytes_GET_SIZE(_SIGNATURE)
    for i in range(start, j):
        item = <Item>PyList_GET_ITEM(items, i)
        values = item.values
        memcpy(p, PyBytes_AS_STRING(values), PyBytes_GET_SIZE(values))
        p += PyBytes_GET_SIZE(values)
        if e2e:
            if item.e2e is None:
                _be32(p, -1)
                p += 4
            else:
                d = PyFloat_AsDouble(item.e2e)
                memcpy(&bits, &d, 8)
                _be32(p, 8)
                _be64(p + 4, bits)
                p += 12
    if j == n:
        memcpy(p, PyBytes_AS_STRING(_TRAILER), 2)
    return out, j


def count_stored(list items) -> None:
    """Add each item to its request's stored count (runs of one request at a time)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items), run = 0
    cdef object last = None
    cdef Item item
    for i in range(n):
        item = <Item>PyList_GET_ITEM(items, i)
        if item.pending is not last:
            if run:
                last.result.stored += run
            last = item.pending
            run = 0
        run += 1
    if run:
        last.result.stored += run


# ---- array parameters -------------------------------------------------------------

cdef class EncodedArray:
    """A one-dimensional array query parameter already in PostgreSQL's binary
    form. It goes as a parameter of unknown type (items._EncodedArrayDumper),
    so the query must cast it: `%b::int[]`."""

    cdef readonly bytes data
    cdef Py_ssize_t count

    def __len__(self):
        return self.count


cdef EncodedArray _array(list values, int code, unsigned int oid):
    cdef Buf b = Buf(NULL, 0, 0)
    cdef Py_ssize_t i, n = PyList_GET_SIZE(values)
    cdef bint nulls = False
    cdef EncodedArray out = EncodedArray.__new__(EncodedArray)
    for i in range(n):
        if <object>PyList_GET_ITEM(values, i) is None:
            nulls = True
            break
    try:
        _reserve(&b, 20)
        _be32(b.data, 1 if n else 0)  # dimensions (0: the empty array)
        _be32(b.data + 4, 1 if nulls else 0)
        _be32(b.data + 8, oid)
        b.size = 12
        if n:
            _be32(b.data + 12, n)
            _be32(b.data + 16, 1)  # lower bound
            b.size = 20
        for i in range(n):
            value = <object>PyList_GET_ITEM(values, i)
            if code == 2:
                _put_int(&b, value, 4)
            elif code == 3:
                _put_int(&b, value, 8)
            elif code == 8:
                _put_float8(&b, value)
            elif code == 7:
                _put_bytes(&b, value)
            else:
                _put_text(&b, value)
        out.data = _take(&b)
        out.count = n
        return out
    finally:
        PyMem_Free(b.data)


def int4_array(list values) -> EncodedArray:
    return _array(values, 2, 23)


def int8_array(list values) -> EncodedArray:
    return _array(values, 3, 20)


def float8_array(list values) -> EncodedArray:
    return _array(values, 8, 701)


def bytea_array(list values) -> EncodedArray:
    return _array(values, 7, 17)


def text_array(list values) -> EncodedArray:
    return _array(values, 6, 25)


# ---- a batch's bounds -------------------------------------------------------------

def span_bounds(list spans) -> tuple:
    """(earliest start, latest start, the set of span ids) of a batch's spans."""
    cdef long long t, first = 0, last = 0
    cdef Py_ssize_t i, n = PyList_GET_SIZE(spans)
    cdef set ids = set()
    cdef bint d
    try:
        for i in range(n):
            s = <object>PyList_GET_ITEM(spans, i)
            d = type(s) is _SpanRow
            t = PyLong_AsLongLong(_at(s, d, SP_START, "start_time_ns"))
            if i == 0 or t < first:
                first = t
            if i == 0 or t > last:
                last = t
            ids.add(_at(s, d, SP_SPAN, "span_id"))
    except OverflowError:  # a time beyond 64 bits: refused row by row
        starts = [s.start_time_ns for s in spans]
        return min(starts), max(starts), {s.span_id for s in spans}
    return first, last, ids


def stage_bounds(list stages, list keys) -> tuple:
    """(earliest time, latest time, the set of dedupe keys) of a batch's stages."""
    cdef long long t, first = 0, last = 0
    cdef Py_ssize_t i, n = PyList_GET_SIZE(stages)
    try:
        for i in range(n):
            s = <object>PyList_GET_ITEM(stages, i)
            t = PyLong_AsLongLong(_at(s, type(s) is _StageRow, ST_TIME, "time_ns"))
            if i == 0 or t < first:
                first = t
            if i == 0 or t > last:
                last = t
    except OverflowError:  # a time beyond 64 bits: refused row by row
        times = [s.time_ns for s in stages]
        return min(times), max(times), set(keys)
    return first, last, set(keys)


# ---- flow rollups of new stages -----------------------------------------------------
# collector.rollups.Rollups.add_stage for each stage of a group, with its
# fields read at their offsets and the histogram bucket found in C; the sums
# stay Python numbers, added as Python adds them.

from collector import histogram as _histogram
from collector import rollups as _rollups

cdef object _stage_edge = _rollups.stage_edge
cdef object _empty = _histogram.empty
cdef double _BOUNDS_MS[16]
if len(_histogram.BOUNDS_MS) != 16:
    raise ImportError("histogram.BOUNDS_MS changed: binrows' copy of it must follow")
for _i, _bound in enumerate(_histogram.BOUNDS_MS):
    _BOUNDS_MS[_i] = _bound
cdef long long _MINUTE_NS = 60_000_000_000
cdef str _PRODUCER = "producer"
cdef str _PUBLISHED = "published"
cdef str _FAILED = "failed"
cdef str _RECEIVED = "received"
cdef str _RETRIED = "retried"
cdef str _PROCESSED = "processed"
cdef str _DEADLETTERED = "deadlettered"


cdef inline int _bucket(double ms) noexcept:
    # bisect.bisect_left(BOUNDS_MS, ms)
    cdef int lo = 0, hi = 16, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if _BOUNDS_MS[mid] < ms:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _bump(list values, Py_ssize_t index, object by) except *:
    values[index] = values[index] + by


cdef list _minute_row(dict edges, dict rows, tuple key, time_ns):
    """The rollup row of the stage's edge (`key`: project, role, service,
    system, channel, group) and minute, made when new (Rollups' edge_of and
    minute row); None when the stage makes no edge."""
    cdef long long ns
    edge = edges.get(key, edges)
    if edge is edges:
        edge = edges[key] = _stage_edge(*key)
    if edge is None:
        return None
    ns = PyLong_AsLongLong(time_ns)
    minute = ns // _MINUTE_NS
    if ns % _MINUTE_NS < 0:
        minute -= 1  # floor, as Python's //
    slot = (edge, minute)
    row = rows.get(slot)
    if row is None:
        row = rows[slot] = [[0] * 8, _empty(), _empty()]
    return <list>row


def add_stages(flow, list items) -> tuple:
    """Add each item's stage to the flow rollups `flow` (Rollups.add_stage);
    returns (the failed and dead-lettered stages, the stages' projects)."""
    cdef dict edges = flow._edges
    cdef dict rows = flow._rows
    cdef list failed = []
    cdef set projects = set()
    cdef list sums, durations
    cdef bint d, producer
    for item in items:
        s = (<Item>item).row
        d = type(s) is _StageRow
        project_id = _at(s, d, ST_PROJECT, "project_id")
        role = _at(s, d, ST_ROLE, "role")
        name = _at(s, d, ST_STAGE, "stage")
        projects.add(project_id)
        if name == _FAILED or name == _DEADLETTERED:
            failed.append(s)
        row = _minute_row(edges, rows, (
            project_id, role, _at(s, d, ST_SERVICE, "service"), _at(s, d, ST_SYSTEM, "system"),
            _at(s, d, ST_CHANNEL, "channel"), _at(s, d, ST_GROUP, "consumer_group"),
        ), _at(s, d, ST_TIME, "time_ns"))  # fmt: skip
        if row is None:
            continue
        sums = <list>(<list>row)[0]
        durations = <list>(<list>row)[1]
        producer = role == _PRODUCER
        if producer:
            if name == _PUBLISHED:
                _bump(sums, 0, 1)
            elif name == _FAILED:
                _bump(sums, 0, 1)
                _bump(sums, 2, 1)
            else:
                continue
        elif name == _RECEIVED:
            _bump(sums, 1, 1)
            continue
        elif name == _RETRIED:
            _bump(sums, 4, 1)
            continue
        elif name == _PROCESSED:
            _bump(sums, 0, 1)
        elif name == _FAILED:
            _bump(sums, 0, 1)
            _bump(sums, 2, 1)
        elif name == _DEADLETTERED:
            _bump(sums, 0, 1)
            _bump(sums, 2, 1)
            _bump(sums, 3, 1)
        else:
            continue
        duration_ms = _at(s, d, ST_DURATION, "duration_ms")
        if duration_ms is not None:
            _bump(durations, _bucket(PyFloat_AsDouble(duration_ms)), 1)
            _bump(sums, 5, duration_ms)
    return failed, projects


cdef str _CONSUMER = "consumer"


def count_e2e(flow, list stages, dict e2e) -> None:
    """Add the end-to-end latency (`e2e`, by id of stage) of each consume outcome
    among `stages` to its consume edge in `flow` (Rollups.add_e2e)."""
    cdef dict edges = flow._edges
    cdef dict rows = flow._rows
    cdef list sums, latencies
    cdef bint d
    for s in stages:
        latency = e2e.get(id(s))
        if latency is None:
            continue
        d = type(s) is _StageRow
        name = _at(s, d, ST_STAGE, "stage")
        if not (name == _PROCESSED or name == _FAILED or name == _DEADLETTERED):
            continue
        row = _minute_row(edges, rows, (
            _at(s, d, ST_PROJECT, "project_id"), _CONSUMER, _at(s, d, ST_SERVICE, "service"),
            _at(s, d, ST_SYSTEM, "system"), _at(s, d, ST_CHANNEL, "channel"),
            _at(s, d, ST_GROUP, "consumer_group"),
        ), _at(s, d, ST_TIME, "time_ns"))  # fmt: skip
        if row is None:
            continue
        sums = <list>(<list>row)[0]
        latencies = <list>(<list>row)[2]
        _bump(latencies, _bucket(PyFloat_AsDouble(latency)), 1)
        _bump(sums, 6, 1)
        _bump(sums, 7, latency)
