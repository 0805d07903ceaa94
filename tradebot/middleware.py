"""Request limits enforced before any view, parser or form reads the request.

Django checks DATA_UPLOAD_MAX_MEMORY_SIZE only when `request.body`/`request.POST` is read; DRF's parsers read the
stream directly, so an API body of any size would be read and parsed. This middleware refuses, from the headers
alone: a declared body larger than DATA_UPLOAD_MAX_MEMORY_SIZE (413), a query string longer than
TRADEBOT_MAX_QUERY_STRING characters (414), a malformed Content-Length (400). Answers are JSON like the API's errors.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


class RequestLimitsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return JsonResponse({"detail": f"invalid Content-Length {declared[:40]!r}"}, status=400)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            return JsonResponse({"detail": f"request body of {length} bytes is over the limit of {limit} bytes"},
                                status=413)
        query = request.META.get("QUERY_STRING", "")
        max_query = settings.TRADEBOT_MAX_QUERY_STRING
        if len(query) > max_query:
            return JsonResponse({"detail": f"query string of {len(query)} characters is over the limit of "
                                           f"{max_query}"}, status=414)
        return self.get_response(request)
