"""Backtest API: runs, sweeps (with live progress and the ranking), sweep results, walk-forward studies."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.backtest import selectors
from apps.backtest.api import serializers as s
from apps.backtest.models import Status


class BacktestRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Backtest runs. POST queues a run over stored candles; poll it until status is done (or failed)."""

    def get_queryset(self):
        q = self.request.query_params
        return selectors.runs(strategy=q.get("strategy"), status=q.get("status"), sweep_id=q.get("sweep"))

    def get_serializer_class(self):
        if self.action == "create":
            return s.BacktestRunCreateSerializer
        if self.action == "list":
            return s.BacktestRunListSerializer
        return s.BacktestRunSerializer

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = serializer.save()
        run.refresh_from_db()  # eager mode may have finished it already
        return Response(s.BacktestRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "text/html"): str}, description="Offline HTML report (plotly embedded).")
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        from apps.backtest.report import report_for_run

        run = self.get_object()
        if run.status != Status.DONE:
            return Response({"detail": f"run is {run.status}, no report yet"}, status=status.HTTP_409_CONFLICT)
        return HttpResponse(report_for_run(run), content_type="text/html; charset=utf-8")


class SweepViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Parameter sweeps: `completed`/`total` and `progress` update while the workers run; `ranking` = top K."""

    def get_queryset(self):
        q = self.request.query_params
        return selectors.sweeps(strategy=q.get("strategy"), status=q.get("status"))

    def get_serializer_class(self):
        if self.action == "create":
            return s.SweepCreateSerializer
        if self.action == "results":
            return s.SweepResultSerializer
        return s.SweepSerializer

    @extend_schema(request=s.SweepCreateSerializer, responses={201: s.SweepSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sweep = serializer.save()
        sweep.refresh_from_db()
        return Response(s.SweepSerializer(sweep).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("metric", str, description="Rank by this metric (default: the sweep's)"),
                    OpenApiParameter("failed", bool, description="Only failed parameter sets")],
        responses={200: s.SweepResultSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Every result of the sweep, best first by the metric, failed ones last with their reason."""
        sweep = self.get_object()
        rows = selectors.sweep_results(sweep, metric=request.query_params.get("metric") or None)
        if request.query_params.get("failed") in ("1", "true", "yes"):
            rows = [r for r in rows if r.get("error")]
        page = self.paginate_queryset(rows)
        if page is not None:
            return self.get_paginated_response(page)
        return Response(rows)


class WalkForwardViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.WalkForwardSerializer

    def get_queryset(self):
        return selectors.walkforwards()


class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    """Optuna studies (manage.py optimize): configuration, status, best value and parameters; `trials` best first."""

    serializer_class = s.StudySerializer

    def get_queryset(self):
        q = self.request.query_params
        return selectors.studies(strategy=q.get("strategy"), status=q.get("status"))

    @extend_schema(responses={200: s.StudyTrialSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def trials(self, request, pk=None):
        rows = selectors.study_trials(self.get_object())
        page = self.paginate_queryset(rows)
        if page is not None:
            return self.get_paginated_response(page)
        return Response(rows)
