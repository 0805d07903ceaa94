"""Shared admin pieces for the control panel."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """For derived data (candles, trades, signals, snapshots): visible and deletable, never hand-edited."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
