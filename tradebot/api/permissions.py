"""Roles: any authenticated user reads; only staff write (POST/PUT/PATCH/DELETE and actions)."""

from __future__ import annotations

from rest_framework.exceptions import Throttled
from rest_framework.permissions import SAFE_METHODS, BasePermission


class IsStaffOrReadOnly(BasePermission):
    message = "Authentication credentials were not provided."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            # DRF checks permissions before throttles, so an anonymous flood would get 401s forever: count it here.
            for throttle in view.get_throttles():
                if not throttle.allow_request(request, view):
                    raise Throttled(wait=throttle.wait())
            return False
        if request.method in SAFE_METHODS:
            return True
        if not user.is_staff:
            self.message = "Only staff users may change things."
            return False
        return True
