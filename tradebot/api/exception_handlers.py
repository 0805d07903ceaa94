"""The one API error body: every domain error and every validation error is a 400 `{"detail", "field"}`.

`ApplicationError` (apps.common.errors, raised by services and validators), Django's `ValidationError` and DRF's
`ValidationError` (serializer shape errors) all answer 400 with:

    {"detail": "<one readable line>", "field": "<the input at fault, dotted: parameters.fast>" | null,
     "errors": {<field>: [<messages>]}}            # "errors" only for serializer errors, every field listed

Everything else keeps DRF's answer (401/403/404/405/429 `{"detail": ...}`). An unexpected exception stays a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from apps.common.errors import ApplicationError


def _first(errors: Any, prefix: str = "") -> tuple[str | None, str]:
    """(dotted field, message) of the first error in a DRF error structure."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = None if key in ("non_field_errors", "__all__") else (f"{prefix}.{key}" if prefix else str(key))
            field, message = _first(value, name or prefix)
            return (field if field is not None else name), message
        return (prefix or None), "invalid input"
    if isinstance(errors, list):
        for i, value in enumerate(errors):
            if isinstance(value, dict | list):
                return _first(value, f"{prefix}.{i}" if prefix else str(i))
            return (prefix or None), str(value)
        return (prefix or None), "invalid input"
    return (prefix or None), str(errors)


def application_error_response(exc: ApplicationError) -> Response:
    body: dict[str, Any] = {"detail": exc.message, "field": exc.field}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def exception_handler_with_fields(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return application_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        field, message = _first(response.data)
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"detail": f"{field}: {message}" if field else message, "field": field, "errors": errors}
    return response
