"""What every feature's JSON API shares: the response helpers, and the
building blocks each feature's openapi.py describes its endpoints with
(dashboard/openapi.py puts the document together).

Views are plain functions behind `dashboard.access.api_view`; a parameter
the caller got wrong is answered 400 with a message saying which.
"""

import functools

from django.http import JsonResponse

from dashboard.access import json_error
from dashboard.query_params import BadParameter


def answers_bad_parameters(view):
    """Turn BadParameter raised by the view into a 400 with its message."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except BadParameter as exc:
            return json_error(400, str(exc))

    return wrapped


def ok(data, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, json_dumps_params={"separators": (",", ":")})


# ---- OpenAPI building blocks -----------------------------------------------------


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def param(name, description, schema=None, where="query", required=False):
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


WINDOW = [
    param("window", "Time window ending now", {"enum": ["15m", "1h", "6h", "24h", "7d"]}),
    param("since", "Window start (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
    param("until", "Window end (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
]
PAGE = [
    param("limit", "Items per page", {"type": "integer", "minimum": 1, "maximum": 500}),
    param("cursor", "Opaque cursor from the previous page's next_cursor"),
]
PROJECT = [param("project", "Project slug (session users with several projects)")]
ERRORS = {
    "400": {
        "description": "A parameter is wrong; the message says which",
        "content": {"application/json": {"schema": ref("Error")}},
    },
    "401": {
        "description": "No session and no valid read-scoped token",
        "content": {"application/json": {"schema": ref("Error")}},
    },
    "403": {
        "description": "Missing role in the project",
        "content": {"application/json": {"schema": ref("Error")}},
    },
}
CONFLICT = {
    "409": {
        "description": "The event cannot be replayed faithfully: it has no stored payload "
        "(known from spans only) or its payload was cut at the size cap",
        "content": {"application/json": {"schema": ref("Error")}},
    }
}
NOT_FOUND = {
    "404": {
        "description": "Not found in this project",
        "content": {"application/json": {"schema": ref("Error")}},
    }
}


def response(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def list_of(item, windowed=False, **more):
    """A page of a list; `windowed` lists also say which window they cover."""
    properties = {
        "items": {"type": "array", "items": item},
        "next_cursor": {"type": ["string", "null"]},
        **more,
    }
    required = ["items", "next_cursor"]
    if windowed:
        properties.update(since=DATE_TIME, until=DATE_TIME)
        required += ["since", "until"]
    return {"type": "object", "required": required, "properties": properties}


def operation(summary, parameters=(), responses=None, body=None, tag=None):
    op = {
        "summary": summary,
        "parameters": [*PROJECT, *parameters],
        "responses": {**(responses or {}), **ERRORS},
    }
    if tag:
        op["tags"] = [tag]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def crud(name, schema, tag):
    ident = [param("id", f"{name} id", {"type": "integer"}, where="path")]
    return {
        "get": operation(
            f"One {name}", ident, {"200": response(ref(schema)), **NOT_FOUND}, tag=tag
        ),
        "put": operation(
            f"Change a {name} (editor)",
            ident,
            {"200": response(ref(schema)), **NOT_FOUND},
            body=ref(schema),
            tag=tag,
        ),
        "delete": operation(
            f"Delete a {name} (editor)",
            ident,
            {"204": {"description": "Deleted"}, **NOT_FOUND},
            tag=tag,
        ),
    }


NUMBER_OR_NULL = {"type": ["number", "null"]}
STRING = {"type": "string"}
STRING_OR_NULL = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}
INTEGER_OR_NULL = {"type": ["integer", "null"]}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
DATE_TIME = {"type": "string", "format": "date-time"}
DATE_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
STAGES = ["published", "received", "processed", "failed", "retried", "deadlettered"]


def object_schema(properties: dict, optional=()) -> dict:
    """An object schema whose properties are all present in responses, but `optional`."""
    return {
        "type": "object",
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }


ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
