"""OpenAPI post-processing: every operation documents its error and auth responses with one `Error` schema
(the bodies of tradebot.api.exception_handlers and DRF's `{"detail"}`)."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": "An error. 400: `detail` is one readable line, `field` the input at fault (dotted, e.g. "
    "`parameters.fast`) and `errors` every field's messages; 401/403/404/409/429: `detail` only.",
    "properties": {
        "detail": {"type": "string"},
        "field": {"type": "string", "nullable": True},
        "errors": {"type": "object", "additionalProperties": True},
        "extra": {"type": "object", "additionalProperties": True},
    },
    "required": ["detail"],
}

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
WWW_AUTH = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Token` (send `Authorization: "
                                                                           "Token <key>`)"}}


def _error(description: str, headers: dict | None = None) -> dict:
    schema = {"$ref": "#/components/schemas/Error"}
    out = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = op.setdefault("responses", {})
            anonymous_ok = any(not req for req in op.get("security", [{"x": []}]))
            responses.setdefault("400", _error("Bad input: the offending field is named"))
            if not anonymous_ok:
                responses.setdefault("401", _error("Not authenticated", WWW_AUTH))
                responses.setdefault("403", _error("Authenticated but not allowed (writes need staff)"))
            if "{" in path:
                responses.setdefault("404", _error("No such object"))
            if method in {"post", "put", "patch"} or path.endswith("/report/"):  # a report of an unfinished job
                responses.setdefault("409", _error("Conflicts with the object's state"))
            responses.setdefault("429", _error("Throttled", RETRY_AFTER))
            if method == "get":
                # gunicorn refuses request lines over 4094 bytes before Django sees them (plain text/html body)
                responses.setdefault("414", {"description": "Request line too long (refused by the web server)",
                                             "content": {"text/html": {"schema": {"type": "string"}}}})
    return result
