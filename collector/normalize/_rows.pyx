# cython: language_level=3, boundscheck=False, wraparound=False
"""SpanRow and StageRow made from all their fields at once, without their
dataclass __init__ (collector/normalize/rows.py says when this is used).

Both are slots dataclasses: a field is a pointer at a fixed offset in the
object. Their generated __init__ is a Python function: called for every
span and every stage, it cost about 2,200 instructions a row, an eighth of
normalising the benchmark's spans (bench/instructions.py: 29,589 -> 25,674
a span, at 1.75 rows a span). Here the object is allocated as its type
allocates (PyType_GenericAlloc: zeroed slots) and each slot set at the
offset its member descriptor gives, which is where the __init__'s
assignments put them.

The rows are then untracked by the cyclic garbage collector: they hold
strings, numbers, bytes and tuples or dicts of those, never an object that
leads back to them, so reference counting alone frees them. Tracked, every
collection that ran while a group was written walked each queued row
again: 1,800 of the writer's 31,900 instructions a span.
"""

import dataclasses
import types

from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF

from collector.batch import SpanRow, StageRow

cdef extern from "Python.h":
    PyObject *PyType_GenericAlloc(PyTypeObject *, Py_ssize_t) except NULL
    void PyObject_GC_UnTrack(void *)
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

# The fields, in the order the dataclasses declare them (checked at import:
# a class changed without a rebuild makes this module refuse to load, and
# the dataclasses are called instead).
SPAN_FIELDS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "start_time_ns", "duration_ns",
    "service", "name", "kind", "status_code", "status_message", "attributes", "resource",
    "events", "links", "scope",
)
STAGE_FIELDS = (
    "project_id", "time_ns", "stage", "role", "service", "system", "channel", "consumer_group",
    "trace_id", "span_id", "parent_span_id", "linked", "event_id", "event_source", "event_type",
    "error", "duration_ms", "origin", "error_type",
)


cdef list _offsets(cls, tuple names):
    declared = tuple(f.name for f in dataclasses.fields(cls))
    if declared != names or set(cls.__slots__) != set(names):
        raise ImportError(f"{cls.__name__} has changed since collector/normalize/_rows.pyx was built")
    out = []
    for name in names:
        descriptor = cls.__dict__[name]
        if type(descriptor) is not types.MemberDescriptorType:
            raise ImportError(f"{cls.__name__}.{name} is not a slot")
        out.append((<PyMemberDescrObject *><PyObject *>descriptor).d_member.offset)
    return out


cdef list _span_offsets = _offsets(SpanRow, SPAN_FIELDS)
cdef list _stage_offsets = _offsets(StageRow, STAGE_FIELDS)
cdef Py_ssize_t[16] SP
cdef Py_ssize_t[19] ST
for _i in range(16):
    SP[_i] = _span_offsets[_i]
for _i in range(19):
    ST[_i] = _stage_offsets[_i]
cdef PyTypeObject *_SPAN_TYPE = <PyTypeObject *>SpanRow
cdef PyTypeObject *_STAGE_TYPE = <PyTypeObject *>StageRow


cdef inline void _set(PyObject *row, Py_ssize_t offset, object value):
    Py_INCREF(value)
    (<PyObject **>((<char *>row) + offset))[0] = <PyObject *>value


cdef inline object _owned(PyObject *row):
    # The allocation's own reference becomes the returned object's.
    result = <object>row
    Py_DECREF(result)
    return result


# Each field is a parameter of its own and set on a line of its own: taking
# them as *fields packs a tuple for every row and loops over it, which cost
# 800 instructions a span more (bench/instructions.py).


def span_row(project_id, trace_id, span_id, parent_span_id, start_time_ns, duration_ns,
             service, name, kind, status_code, status_message, attributes, resource, events,
             links, scope):
    """SpanRow(every field, positionally)."""
    cdef PyObject *row = PyType_GenericAlloc(_SPAN_TYPE, 0)
    PyObject_GC_UnTrack(row)
    _set(row, SP[0], project_id)
    _set(row, SP[1], trace_id)
    _set(row, SP[2], span_id)
    _set(row, SP[3], parent_span_id)
    _set(row, SP[4], start_time_ns)
    _set(row, SP[5], duration_ns)
    _set(row, SP[6], service)
    _set(row, SP[7], name)
    _set(row, SP[8], kind)
    _set(row, SP[9], status_code)
    _set(row, SP[10], status_message)
    _set(row, SP[11], attributes)
    _set(row, SP[12], resource)
    _set(row, SP[13], events)
    _set(row, SP[14], links)
    _set(row, SP[15], scope)
    return _owned(row)


def stage_row(project_id, time_ns, stage, role, service, system, channel, consumer_group,
              trace_id, span_id, parent_span_id, linked, event_id, event_source, event_type,
              error, duration_ms, origin, error_type):
    """StageRow(every field, positionally)."""
    cdef PyObject *row = PyType_GenericAlloc(_STAGE_TYPE, 0)
    PyObject_GC_UnTrack(row)
    _set(row, ST[0], project_id)
    _set(row, ST[1], time_ns)
    _set(row, ST[2], stage)
    _set(row, ST[3], role)
    _set(row, ST[4], service)
    _set(row, ST[5], system)
    _set(row, ST[6], channel)
    _set(row, ST[7], consumer_group)
    _set(row, ST[8], trace_id)
    _set(row, ST[9], span_id)
    _set(row, ST[10], parent_span_id)
    _set(row, ST[11], linked)
    _set(row, ST[12], event_id)
    _set(row, ST[13], event_source)
    _set(row, ST[14], event_type)
    _set(row, ST[15], error)
    _set(row, ST[16], duration_ms)
    _set(row, ST[17], origin)
    _set(row, ST[18], error_type)
    return _owned(row)
