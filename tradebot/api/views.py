"""JSON answers for /api/ paths outside any view (404/500), and the permanent redirect of the pre-v1 paths."""

from __future__ import annotations

from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.defaults import page_not_found, server_error


def redirect_to_v1(request, rest: str):
    """`/api/<rest>` -> `/api/v1/<rest>` with 308 (method and body kept), query string kept."""
    target = f"/api/v1/{rest}"
    if request.META.get("QUERY_STRING"):
        target += "?" + request.META["QUERY_STRING"]
    response = HttpResponsePermanentRedirect(target)
    response.status_code = 308
    return response


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_failure(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal error; it has been logged."}, status=500)
    return server_error(request)


class SingleValuedQueryMiddleware(MiddlewareMixin):
    """Every /api/ query parameter takes one value: `?offset=1&offset=2` is a 400 naming it, not a silent pick."""

    def process_request(self, request):
        if not request.path.startswith("/api/"):
            return None
        for key, values in request.GET.lists():
            if len(values) > 1:
                return JsonResponse({"detail": f"{key}: give this parameter once", "field": key}, status=400)
        return None
