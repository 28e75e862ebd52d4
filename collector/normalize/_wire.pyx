# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""An ExportTraceServiceRequest's protobuf bytes to a Batch, without upb messages.

`normalize(body, project_id)` gives what `decode_request("traces", body,
PROTOBUF)` and `normalize_traces(request, project_id)` give together, or
None when it is not sure it can (see collector.normalize.wire, which then
takes the upb path and counts the fallback).

Two passes over the bytes:

1. `_valid_*`: C only, no Python object. The whole request is checked the way
   upb parses it: every length, every known string field (used or not) is
   valid UTF-8, known fields have their wire type, nesting stays far below
   upb's depth limit. Anything it does not handle exactly as upb does is
   "odd" and the request goes to upb: a wrong wire type (upb keeps such a
   field as unknown), a singular message field sent twice (upb merges the
   two), groups, over-long varints, fields this reader has no use for and
   upb would interpret (Resource.entity_refs, AnyValue.string_value_strindex).
   Unknown fields are skipped as protobuf skips them; a scalar field sent
   twice keeps its last value (proto3).
2. `_Reader`: the per-span work of `normalize_traces` on the checked bytes.
   The rules stay in Python and are called from here, not copied: the
   request state and the stage passes (`TraceRequest`), rejection messages
   (`_span_problem`), the limits (`Limits.text`, `mark`), secrets
   (`Matcher.is_secret`, `walk`), NUL handling (`_pb_text`), values other
   than strings, integers and booleans (`bounded_value`, handed small
   stand-ins for the upb messages), links' contexts (`optional_id_problem`)
   and the service name (`_service`). What is compiled is the control flow of
   `normalize_traces` and `attributes` around them; tests compare the two
   paths on random requests.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

from collector import redact
from collector.attribute_limits import mark
from collector.decode import hex_id, optional_id_problem
from collector.normalize.rows import span_row
from collector.normalize.spans import TraceRequest
from collector.normalize.values import _pb_text, _service, bounded_value

cdef object _REDACTED = redact.REDACTED
cdef object _bounded_value = bounded_value
cdef object _mark = mark
cdef object _pb_text_ = _pb_text
cdef object _span_row = span_row  # SpanRow(...), without its Python __init__ when built

cdef enum:
    # Message nesting past which a request goes to upb (its limit is 100).
    MAX_DEPTH = 64
    CACHE_SLOTS = 4096  # a power of two
    MAX_CACHED_CHARS = 64
    MAX_SPAN_KIND = 5  # collector.batch.KIND_CONSUMER
    STATUS_ERROR = 2  # collector.batch.STATUS_ERROR
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_I32 = 5

cdef uint64_t MAX_INT64 = 0x7FFFFFFFFFFFFFFFULL
cdef uint64_t MAX_TAG = 0xFFFFFFFFULL
cdef uint64_t ASCII_MASK = 0x8080808080808080ULL


# ---- wire format ---------------------------------------------------------------------------


cdef struct Field:
    uint32_t number
    int wt
    uint64_t value  # varint, fixed64 and fixed32 fields
    const uint8_t *data  # length-delimited fields
    Py_ssize_t size


cdef inline int _varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) noexcept nogil:
    cdef const uint8_t *p = pp[0]
    cdef uint64_t result = 0
    cdef uint64_t byte
    cdef int i
    if p < end and p[0] < 0x80:  # one byte: tags, lengths and small numbers
        out[0] = p[0]
        pp[0] = p + 1
        return 0
    for i in range(10):
        if p >= end:
            return -1
        byte = p[0]
        p += 1
        if i == 9 and byte > 1:
            return -1  # past 64 bits
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            pp[0] = p
            out[0] = result
            return 0
    return -1


cdef inline uint64_t _little(const uint8_t *p, int size) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(size - 1, -1, -1):
        value = (value << 8) | p[i]
    return value


cdef inline int _next(const uint8_t **pp, const uint8_t *end, Field *f) noexcept nogil:
    """1 and the field at pp (pp moves past it), 0 at the end, -1 when odd."""
    cdef const uint8_t *p = pp[0]
    cdef uint64_t tag, size
    if p >= end:
        return 0
    if _varint(&p, end, &tag) or tag > MAX_TAG or tag >> 3 == 0:
        return -1
    f.number = <uint32_t>(tag >> 3)
    f.wt = <int>(tag & 7)
    if f.wt == WT_VARINT:
        if _varint(&p, end, &f.value):
            return -1
    elif f.wt == WT_LEN:
        if _varint(&p, end, &size) or size > <uint64_t>(end - p):
            return -1
        f.data = p
        f.size = <Py_ssize_t>size
        p += size
    elif f.wt == WT_I64:
        if end - p < 8:
            return -1
        f.value = _little(p, 8)
        p += 8
    elif f.wt == WT_I32:
        if end - p < 4:
            return -1
        f.value = _little(p, 4)
        p += 4
    else:
        return -1  # groups (deprecated, upb skips them) and invalid wire types
    pp[0] = p
    return 1


cdef inline bint _last(const uint8_t *p, const uint8_t *end, uint32_t number, Field *out) noexcept nogil:
    """Whether the message p..end holds field `number`; its last occurrence in `out`
    (protobuf's last-one-wins; a message field sent twice never gets here: see check)."""
    cdef Field f
    cdef bint found = False
    while _next(&p, end, &f) > 0:
        if f.number == number:
            out[0] = f
            found = True
    return found


cdef int _utf8(const uint8_t *s, Py_ssize_t n) noexcept nogil:
    """0 when s[:n] is valid UTF-8 (what upb accepts in a string field), else -1."""
    cdef Py_ssize_t i = 0
    cdef uint8_t c, c1
    cdef uint64_t word
    while i < n:
        if i + 8 <= n:
            memcpy(&word, s + i, 8)
            if word & ASCII_MASK == 0:  # eight ASCII bytes at once
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return -1
        if c < 0xE0:
            if i + 1 >= n or s[i + 1] & 0xC0 != 0x80:
                return -1
            i += 2
            continue
        if i + 1 >= n:
            return -1
        c1 = s[i + 1]
        if c1 & 0xC0 != 0x80:
            return -1
        if c < 0xF0:
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return -1  # overlong, surrogate
            if i + 2 >= n or s[i + 2] & 0xC0 != 0x80:
                return -1
            i += 3
            continue
        if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return -1  # overlong, past U+10FFFF
        if i + 3 >= n or s[i + 2] & 0xC0 != 0x80 or s[i + 3] & 0xC0 != 0x80:
            return -1
        i += 4
    return 0


# ---- pass 1: would upb take it, the way this reader reads it ------------------------------
# Each returns 0 when the message is fine, -1 when the request should go to upb.


cdef inline int _text(Field *f) noexcept nogil:
    if f.wt != WT_LEN:
        return -1
    return _utf8(f.data, f.size)


cdef int _valid_any(const uint8_t *p, const uint8_t *end, int depth) noexcept nogil:
    cdef Field f
    cdef int r
    cdef uint32_t case = 0
    if depth > MAX_DEPTH:
        return -1
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number == 1:
            if _text(&f):
                return -1
        elif f.number == 2 or f.number == 3:
            if f.wt != WT_VARINT:
                return -1
        elif f.number == 4:
            if f.wt != WT_I64:
                return -1
        elif f.number == 5 or f.number == 6:
            # The same message case twice in a row is merged by upb.
            if f.wt != WT_LEN or case == f.number:
                return -1
            if _valid_list(f.data, f.data + f.size, depth + 1, f.number == 6):
                return -1
        elif f.number == 7:
            if f.wt != WT_LEN:
                return -1
        elif f.number == 8:
            return -1  # string_value_strindex: profiles only
        else:
            continue
        case = f.number


cdef int _valid_list(const uint8_t *p, const uint8_t *end, int depth, bint pairs) noexcept nogil:
    """ArrayValue (`pairs` false) or KeyValueList."""
    cdef Field f
    cdef int r
    if depth > MAX_DEPTH:
        return -1
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number == 1:
            if f.wt != WT_LEN:
                return -1
            if pairs:
                r = _valid_kv(f.data, f.data + f.size, depth + 1)
            else:
                r = _valid_any(f.data, f.data + f.size, depth + 1)
            if r:
                return -1


cdef int _valid_kv(const uint8_t *p, const uint8_t *end, int depth) noexcept nogil:
    cdef Field f
    cdef int r
    cdef bint value = False
    if depth > MAX_DEPTH:
        return -1
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number == 1:
            if _text(&f):
                return -1
        elif f.number == 2:
            if f.wt != WT_LEN or value:
                return -1
            value = True
            if _valid_any(f.data, f.data + f.size, depth + 1):
                return -1
        elif f.number == 3:
            if f.wt != WT_VARINT:
                return -1


cdef inline int _valid_kvs(Field *f, int depth) noexcept nogil:
    if f.wt != WT_LEN:
        return -1
    return _valid_kv(f.data, f.data + f.size, depth)


cdef int _valid_span(const uint8_t *p, const uint8_t *end, int depth) noexcept nogil:
    cdef Field f, g
    cdef int r
    cdef const uint8_t *q
    cdef bint status = False
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number == 1 or f.number == 2 or f.number == 4:
            if f.wt != WT_LEN:
                return -1
        elif f.number == 3 or f.number == 5:
            if _text(&f):
                return -1
        elif f.number == 16:
            if f.wt != WT_I32:
                return -1
        elif f.number == 6 or f.number == 10 or f.number == 12 or f.number == 14:
            if f.wt != WT_VARINT:
                return -1
        elif f.number == 7 or f.number == 8:
            if f.wt != WT_I64:
                return -1
        elif f.number == 9:
            if _valid_kvs(&f, depth + 1):
                return -1
        elif f.number == 11 or f.number == 13:  # events, links
            if f.wt != WT_LEN:
                return -1
            q = f.data
            while True:
                r = _next(&q, f.data + f.size, &g)
                if r < 0:
                    return -1
                if r == 0:
                    break
                if f.number == 11:
                    if g.number == 1:
                        r = g.wt != WT_I64
                    elif g.number == 2:
                        r = _text(&g)
                    elif g.number == 3:
                        r = _valid_kvs(&g, depth + 2)
                    elif g.number == 4:
                        r = g.wt != WT_VARINT
                    else:
                        r = 0
                else:
                    if g.number == 1 or g.number == 2:
                        r = g.wt != WT_LEN
                    elif g.number == 3:
                        r = _text(&g)
                    elif g.number == 4:
                        r = _valid_kvs(&g, depth + 2)
                    elif g.number == 5:
                        r = g.wt != WT_VARINT
                    elif g.number == 6:
                        r = g.wt != WT_I32
                    else:
                        r = 0
                if r:
                    return -1
        elif f.number == 15:
            if f.wt != WT_LEN or status:
                return -1
            status = True
            q = f.data
            while True:
                r = _next(&q, f.data + f.size, &g)
                if r < 0:
                    return -1
                if r == 0:
                    break
                if g.number == 2:
                    if _text(&g):
                        return -1
                elif g.number == 3:
                    if g.wt != WT_VARINT:
                        return -1


cdef int _valid_request(const uint8_t *p, const uint8_t *end) noexcept nogil:
    cdef Field f, g, h
    cdef int r
    cdef const uint8_t *q
    cdef const uint8_t *s
    cdef bint resource, scope
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number != 1:
            continue
        if f.wt != WT_LEN:
            return -1
        # ResourceSpans
        resource = False
        q = f.data
        while True:
            r = _next(&q, f.data + f.size, &g)
            if r < 0:
                return -1
            if r == 0:
                break
            if g.number == 1:  # Resource
                if g.wt != WT_LEN or resource:
                    return -1
                resource = True
                s = g.data
                while True:
                    r = _next(&s, g.data + g.size, &h)
                    if r < 0:
                        return -1
                    if r == 0:
                        break
                    if h.number == 1:
                        if _valid_kvs(&h, 4):
                            return -1
                    elif h.number == 2:
                        if h.wt != WT_VARINT:
                            return -1
                    elif h.number == 3:
                        return -1  # entity_refs
            elif g.number == 2:  # ScopeSpans
                if g.wt != WT_LEN:
                    return -1
                scope = False
                s = g.data
                while True:
                    r = _next(&s, g.data + g.size, &h)
                    if r < 0:
                        return -1
                    if r == 0:
                        break
                    if h.number == 1:
                        if h.wt != WT_LEN or scope:
                            return -1
                        scope = True
                        if _valid_scope(h.data, h.data + h.size):
                            return -1
                    elif h.number == 2:
                        if h.wt != WT_LEN or _valid_span(h.data, h.data + h.size, 4):
                            return -1
                    elif h.number == 3:
                        if _text(&h):
                            return -1
            elif g.number == 3:
                if _text(&g):
                    return -1


cdef int _valid_scope(const uint8_t *p, const uint8_t *end) noexcept nogil:
    cdef Field f
    cdef int r
    while True:
        r = _next(&p, end, &f)
        if r <= 0:
            return r
        if f.number == 1 or f.number == 2:
            if _text(&f):
                return -1
        elif f.number == 3:
            if _valid_kvs(&f, 5):
                return -1
        elif f.number == 4:
            if f.wt != WT_VARINT:
                return -1


# ---- stand-ins for upb messages, for the rules that take one -------------------------------


cdef class Values:
    """ArrayValue or KeyValueList: `values`."""

    cdef readonly list values


cdef class KeyValue:
    cdef readonly object key
    cdef readonly object value


cdef Values _NO_VALUES = Values()
_NO_VALUES.values = []


cdef class AnyValue:
    """What `bounded_value` and `any_value` read of an AnyValue."""

    cdef readonly object string_value, bool_value, int_value, double_value, bytes_value
    cdef readonly Values array_value, kvlist_value
    cdef object which

    def __cinit__(self):
        self.string_value = ""
        self.bool_value = False
        self.int_value = 0
        self.double_value = 0.0
        self.bytes_value = b""
        self.array_value = _NO_VALUES
        self.kvlist_value = _NO_VALUES
        self.which = None

    def WhichOneof(self, group):
        return self.which


cdef inline str _str(const uint8_t *p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(<const char *>p, n, NULL)


# Keys, names and short values repeat from span to span: the last ASCII string
# decoded for each of these slots is kept and handed out again for the same
# bytes, which saves decoding it and (its hash being kept) hashing it again.
# Only the GIL's holder reads or writes the slots, and nothing in between can
# run Python code.
cdef PyObject *_slots[CACHE_SLOTS]


cdef str _text_of(const uint8_t *p, Py_ssize_t n):
    """_str, through the slots for short strings."""
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t i
    cdef PyObject *hit
    if n > MAX_CACHED_CHARS:
        return _str(p, n)
    for i in range(n):
        h = (h ^ p[i]) * 16777619u
    h &= CACHE_SLOTS - 1
    hit = _slots[h]
    if (
        hit is not NULL
        and PyUnicode_GET_LENGTH(<object>hit) == n
        and memcmp(PyUnicode_DATA(<object>hit), p, n) == 0
    ):
        return <str>hit
    value = _str(p, n)
    if PyUnicode_IS_COMPACT_ASCII(value):
        Py_XDECREF(hit)
        Py_INCREF(value)
        _slots[h] = <PyObject *>value
    return value


cdef inline bytes _bytes(const uint8_t *p, Py_ssize_t n):
    return PyBytes_FromStringAndSize(<const char *>p, n)


cdef AnyValue _any(const uint8_t *p, const uint8_t *end):
    cdef Field f
    cdef AnyValue out = AnyValue()
    cdef double number
    cdef Values values
    cdef list items
    while _next(&p, end, &f) > 0:
        n = f.number
        if n == 1:
            out.which, out.string_value = "string_value", _str(f.data, f.size)
        elif n == 2:
            out.which, out.bool_value = "bool_value", f.value != 0
        elif n == 3:
            out.which, out.int_value = "int_value", <int64_t>f.value
        elif n == 4:
            memcpy(&number, &f.value, 8)
            out.which, out.double_value = "double_value", number
        elif n == 7:
            out.which, out.bytes_value = "bytes_value", _bytes(f.data, f.size)
        elif n == 5 or n == 6:
            items = _list(f.data, f.data + f.size, n == 6)
            values = Values()
            values.values = items
            if n == 5:
                out.which, out.array_value = "array_value", values
            else:
                out.which, out.kvlist_value = "kvlist_value", values
    return out


cdef list _list(const uint8_t *p, const uint8_t *end, bint pairs):
    cdef Field f
    cdef list out = []
    while _next(&p, end, &f) > 0:
        if f.number == 1:
            out.append(_kv(f.data, f.data + f.size) if pairs else _any(f.data, f.data + f.size))
    return out


cdef KeyValue _kv(const uint8_t *p, const uint8_t *end):
    cdef Field f
    cdef KeyValue out = KeyValue()
    out.key = ""
    out.value = None
    while _next(&p, end, &f) > 0:
        if f.number == 1:
            out.key = _str(f.data, f.size)
        elif f.number == 2:
            out.value = _any(f.data, f.data + f.size)
    if out.value is None:
        out.value = AnyValue()
    return out


# ---- pass 2: the rows ------------------------------------------------------------------------


cdef inline bint _zeros(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


cdef inline bint _has_nul(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    return n > 0 and memchr(p, 0, n) != NULL


cdef class _Reader:
    cdef object state, secrets, limits, verdicts, project_id, resource, add_stage
    cdef list spans
    cdef Py_ssize_t count, length

    def __init__(self, project_id):
        self.project_id = project_id
        self.state = TraceRequest(project_id)
        self.secrets = self.state.secrets
        self.limits = self.state.limits
        self.verdicts = self.secrets.verdicts
        self.add_stage = self.state.add_stage
        self.spans = self.state.result.batch.spans
        self.count = self.limits.count
        self.length = self.limits.length

    cdef object _text(self, const uint8_t *p, Py_ssize_t n):
        """A string field as `normalize_traces` stores it: within the length limit, no NUL."""
        value = _text_of(p, n)
        if n > self.length and len(value) > self.length:
            value = self.limits.text(value)
        if _has_nul(p, n):
            value = _pb_text_(value)
        return value

    cdef dict attributes(self, const uint8_t *p, const uint8_t *end, uint32_t number, object dropped):
        """`values.attributes` of the KeyValue entries in field `number` of the message p..end."""
        cdef Field f, g, v
        cdef const uint8_t *q
        cdef const uint8_t *r
        cdef Py_ssize_t total = 0
        cdef PyObject *found
        cdef bint has_value, has_key
        cdef uint32_t which
        cdef Field key_field, value_field, scalar
        cdef dict out = {}
        cdef list cut = None
        limits = self.limits
        length = self.length
        while _next(&p, end, &f) > 0:
            if f.number != number:
                continue
            total += 1
            if total > self.count:
                continue  # past the count limit: counted, never read
            has_key = has_value = False
            q = f.data
            while _next(&q, f.data + f.size, &g) > 0:
                if g.number == 1:
                    key_field, has_key = g, True
                elif g.number == 2:
                    value_field, has_value = g, True
            key = _text_of(key_field.data, key_field.size) if has_key else ""
            found = PyDict_GetItem(self.verdicts, key)
            if found is NULL:
                if has_key and _has_nul(key_field.data, key_field.size):
                    key = _pb_text_(key)
                if len(key) > length:
                    key = limits.text(key)
                    if cut is None:
                        cut = []
                    cut.append(key)
                secret = self.secrets.is_secret(key)
            else:
                secret = <object>found
            if secret:
                out[key] = _REDACTED
                continue
            which = 0
            if has_value:
                r = value_field.data
                while _next(&r, value_field.data + value_field.size, &v) > 0:
                    if 1 <= v.number <= 7:
                        which, scalar = v.number, v
            if which == 1 and scalar.size:
                text = _text_of(scalar.data, scalar.size)
                if scalar.size > length and len(text) > length:
                    text = limits.text(text)
                    if cut is None:
                        cut = []
                    cut.append(key)
                out[key] = _pb_text_(text) if _has_nul(scalar.data, scalar.size) else text
            elif which == 3:
                out[key] = <int64_t>scalar.value
            elif which == 2:
                out[key] = scalar.value != 0
            else:
                value = (
                    _any(value_field.data, value_field.data + value_field.size)
                    if has_value
                    else AnyValue()
                )
                before = limits.truncated
                item = _bounded_value(value, limits)
                if limits.truncated != before:
                    if cut is None:
                        cut = []
                    cut.append(key)
                out[key] = self.secrets.walk(item) if isinstance(item, (dict, list)) else item
        if total > self.count:
            over = total - self.count
            limits.dropped += over
            dropped += over
        if dropped or cut:
            _mark(out, dropped, cut)
        return out

    cdef void span(self, const uint8_t *p, const uint8_t *end, object service, object scope) except *:
        cdef Field f, g
        cdef const uint8_t *start = p
        cdef const uint8_t *q
        cdef Field trace_f, span_f, parent_f, name_f, message_f
        cdef Py_ssize_t trace_n = 0, span_n = 0, parent_n = 0, name_n = 0, message_n = 0
        name_f.data = message_f.data = trace_f.data = span_f.data = parent_f.data = NULL
        cdef uint64_t start_ns = 0, end_ns = 0, dropped = 0
        cdef uint32_t flags = 0
        cdef int32_t kind = 0, code = 0
        cdef bint events = False, links = False
        cdef Field lt, ls
        cdef Py_ssize_t lt_n, ls_n
        while _next(&p, end, &f) > 0:
            n = f.number
            if n == 1:
                trace_f, trace_n = f, f.size
            elif n == 2:
                span_f, span_n = f, f.size
            elif n == 4:
                parent_f, parent_n = f, f.size
            elif n == 5:
                name_f, name_n = f, f.size
            elif n == 6:
                kind = <int32_t><uint32_t>f.value
            elif n == 7:
                start_ns = f.value
            elif n == 8:
                end_ns = f.value
            elif n == 10:
                dropped = <uint32_t>f.value
            elif n == 11:
                events = True
            elif n == 13:
                links = True
            elif n == 15:
                q = f.data
                while _next(&q, f.data + f.size, &g) > 0:
                    if g.number == 2:
                        message_f, message_n = g, g.size
                    elif g.number == 3:
                        code = <int32_t><uint32_t>g.value
            elif n == 16:
                flags = <uint32_t>f.value
        trace_id = _bytes(trace_f.data, trace_n) if trace_n else b""
        span_id = _bytes(span_f.data, span_n) if span_n else b""
        parent_span_id = _bytes(parent_f.data, parent_n) if parent_n else b""
        if (
            trace_n != 16
            or span_n != 8
            or (parent_n and parent_n != 8)
            or _zeros(trace_f.data, 16)
            or _zeros(span_f.data, 8)
            or not 0 < start_ns <= MAX_INT64
            or end_ns > MAX_INT64
            or not 0 <= kind <= MAX_SPAN_KIND
            or not 0 <= code <= STATUS_ERROR
        ):
            self.state.reject_span(
                _str(name_f.data, name_n) if name_n else "", trace_id, span_id, parent_span_id,
                start_ns, end_ns, kind, code,
            )  # fmt: skip
            return
        attrs = self.attributes(start, end, 9, dropped)
        contexts = ()
        if links:
            contexts = []
            p = start
            while _next(&p, end, &f) > 0:
                if f.number != 13:
                    continue
                lt_n = ls_n = 0
                q = f.data
                while _next(&q, f.data + f.size, &g) > 0:
                    if g.number == 1:
                        lt, lt_n = g, g.size
                    elif g.number == 2:
                        ls, ls_n = g, g.size
                if lt_n and ls_n:
                    link_trace, link_span = _bytes(lt.data, lt_n), _bytes(ls.data, ls_n)
                    if optional_id_problem(link_trace, link_span) is None:
                        contexts.append(
                            (link_trace, link_span, (<Py_ssize_t>(f.data - start), f.size))
                        )
        name = self._text(name_f.data, name_n) if name_n else ""
        message = self._text(message_f.data, message_n) if message_n else None
        row = _span_row(
            self.project_id, trace_id, span_id, parent_span_id or None, start_ns,
            end_ns - start_ns if end_ns > start_ns else 0, service, name, kind, code, message,
            attrs, self.resource, self.events(start, end) if events else [],
            self.links(start, contexts) if contexts else [], scope,
        )  # fmt: skip
        self.spans.append(row)
        self.add_stage(flags, attrs, row, contexts)

    cdef list events(self, const uint8_t *p, const uint8_t *end):
        cdef Field f, g, name_f
        cdef const uint8_t *q
        cdef uint64_t time_ns, dropped
        cdef Py_ssize_t name_n
        cdef list out = []
        while _next(&p, end, &f) > 0:
            if f.number != 11:
                continue
            time_ns = dropped = 0
            name_n = 0
            q = f.data
            while _next(&q, f.data + f.size, &g) > 0:
                if g.number == 1:
                    time_ns = g.value
                elif g.number == 2:
                    name_f, name_n = g, g.size
                elif g.number == 4:
                    dropped = <uint32_t>g.value
            out.append(
                {
                    "name": self._text(name_f.data, name_n) if name_n else "",
                    "time_ns": time_ns,
                    "attributes": self.attributes(f.data, f.data + f.size, 3, dropped),
                }
            )
        return out

    cdef list links(self, const uint8_t *start, list contexts):
        cdef Field g
        cdef const uint8_t *link
        cdef const uint8_t *link_end
        cdef uint64_t dropped
        cdef list out = []
        for link_trace, link_span, where in contexts:
            link = start + <Py_ssize_t>where[0]
            link_end = link + <Py_ssize_t>where[1]
            dropped = <uint32_t>g.value if _last(link, link_end, 5, &g) else 0
            out.append(
                {
                    "trace_id": hex_id(link_trace),
                    "span_id": hex_id(link_span),
                    "attributes": self.attributes(link, link_end, 4, dropped),
                }
            )
        return out

    cdef object request(self, const uint8_t *p, const uint8_t *end):
        cdef Field f, g, h, resource_f, scope_f
        cdef const uint8_t *q
        cdef const uint8_t *s
        cdef const uint8_t *end_of
        cdef uint64_t dropped
        cdef Py_ssize_t name_n
        cdef Field name_f
        while _next(&p, end, &f) > 0:
            if f.number != 1:
                continue
            if _last(f.data, f.data + f.size, 1, &resource_f):
                end_of = resource_f.data + resource_f.size
                dropped = <uint32_t>h.value if _last(resource_f.data, end_of, 2, &h) else 0
                self.resource = self.attributes(resource_f.data, end_of, 1, dropped)
            else:
                self.resource = self.attributes(NULL, NULL, 1, 0)
            service = _service(self.resource)
            q = f.data
            while _next(&q, f.data + f.size, &g) > 0:
                if g.number != 2:
                    continue
                name_n = 0
                if _last(g.data, g.data + g.size, 1, &scope_f) and _last(
                    scope_f.data, scope_f.data + scope_f.size, 1, &name_f
                ):
                    name_n = name_f.size
                scope = None
                if name_n:
                    scope = _text_of(name_f.data, name_n)
                    if _has_nul(name_f.data, name_n):
                        scope = _pb_text_(scope)
                s = g.data
                while _next(&s, g.data + g.size, &h) > 0:
                    if h.number == 2:
                        self.span(h.data, h.data + h.size, service, scope)
        return self.state.finish()


cdef inline bytes _as_bytes(body):
    return body if type(body) is bytes else bytes(body)


def check(body):
    """True when `read` may be given `body`: pass 1 alone (the benchmark's "decode")."""
    cdef bytes data = _as_bytes(body)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    return _valid_request(p, p + PyBytes_GET_SIZE(data)) == 0


def read(body, project_id):
    """Pass 2 alone, for bytes `check` accepted (the benchmark's "normalise")."""
    cdef bytes data = _as_bytes(body)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    return _Reader(project_id).request(p, p + PyBytes_GET_SIZE(data))


def normalize(body, project_id):
    """The Normalized result of an ExportTraceServiceRequest's protobuf bytes,
    or None when the request should go through upb (nothing was counted then)."""
    cdef bytes data = _as_bytes(body)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if _valid_request(p, p + n):
        return None
    return _Reader(project_id).request(p, p + n)
