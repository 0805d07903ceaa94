"""Pagination with a hard page-size cap: `limit` must be 1..MAX_LIMIT and `offset` 0..MAX_OFFSET, else a 400 naming
the parameter (DRF's stock LimitOffsetPagination silently clamps or, for huge numbers, lets the database fail)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Deep offsets are slow (the database walks every skipped row); candles use a cursor instead.
MAX_OFFSET = 1_000_000


def bounded_int(params, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError({name: f"must be an integer between {minimum} and {maximum}"}) from None
    if not minimum <= value <= maximum:
        raise ValidationError({name: f"must be between {minimum} and {maximum}, got {raw}"})
    return value


class CappedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request) -> int:
        return bounded_int(request.query_params, self.limit_query_param, default=self.default_limit, minimum=1,
                           maximum=self.max_limit)

    def get_offset(self, request) -> int:
        return bounded_int(request.query_params, self.offset_query_param, default=0, minimum=0, maximum=MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for p in params:
            if p["name"] == self.limit_query_param:
                p["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_limit,
                               "default": self.default_limit}
                p["description"] = f"Page size (1..{self.max_limit}, default {self.default_limit})."
            elif p["name"] == self.offset_query_param:
                p["schema"] = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}
                p["description"] = f"Rows to skip (0..{MAX_OFFSET})."
        return params
