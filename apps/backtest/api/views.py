"""Backtest API: runs, sweeps (with live progress and the ranking), sweep results, walk-forward studies. Creating
any of them stores the row and queues the work on commit (202 with the URL to poll): nothing is computed here."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.backtest import selectors
from apps.backtest.api import serializers as s
from apps.backtest.models import Status


def _status(params) -> str | None:
    value = params.get("status")
    if value is not None and value not in Status.values:
        raise ValidationError({"status": f"unknown status {value!r}: expected one of {', '.join(Status.values)}"})
    return value or None


RUN_FILTERS = [OpenApiParameter("strategy", str), OpenApiParameter("status", str, enum=[c for c, _ in Status.choices]),
               OpenApiParameter("sweep", int, description="Runs of this sweep")]


@extend_schema_view(list=extend_schema(parameters=RUN_FILTERS))
class BacktestRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Backtest runs. POST queues a run over stored candles; poll it until status is done (or failed)."""

    def get_queryset(self):
        q = self.request.query_params
        sweep = q.get("sweep")
        if sweep is not None and not (sweep.isdigit() and int(sweep) < 2**63):
            raise ValidationError({"sweep": "must be a sweep id (a positive integer)"})
        return selectors.runs(strategy=q.get("strategy"), status=_status(q), sweep_id=sweep)

    def get_serializer_class(self):
        if self.action == "create":
            return s.BacktestRunCreateSerializer
        if self.action == "list":
            return s.BacktestRunListSerializer
        return s.BacktestRunSerializer

    @extend_schema(request=s.BacktestRunCreateSerializer, responses={202: s.BacktestRunListSerializer})
    def create(self, request, *args, **kwargs):
        """Queue a run: 202 Accepted, `Location` (and `url` in the body) is the run to poll until done or failed."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = serializer.save()
        run.refresh_from_db()  # eager mode may have finished it already
        url = reverse("backtest-run-detail", args=[run.pk], request=request)
        body = {**s.BacktestRunListSerializer(run).data, "url": url}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": url})

    @extend_schema(responses={(200, "text/html"): str}, description="Offline HTML report (plotly embedded).")
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        from apps.backtest.report import report_for_run

        run = self.get_object()
        if run.status != Status.DONE:
            return Response({"detail": f"run is {run.status}, no report yet"}, status=status.HTTP_409_CONFLICT)
        return HttpResponse(report_for_run(run), content_type="text/html; charset=utf-8")


@extend_schema_view(list=extend_schema(parameters=RUN_FILTERS[:2]))
class SweepViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Parameter sweeps: `completed`/`total` and `progress` update while the workers run; `ranking` = top K."""

    def get_queryset(self):
        q = self.request.query_params
        return selectors.sweeps(strategy=q.get("strategy"), status=_status(q))

    def get_serializer_class(self):
        if self.action == "create":
            return s.SweepCreateSerializer
        if self.action == "results":
            return s.SweepResultSerializer
        return s.SweepSerializer

    @extend_schema(request=s.SweepCreateSerializer, responses={202: s.SweepSerializer})
    def create(self, request, *args, **kwargs):
        """Store the sweep and queue its dispatch (a worker fans it out): 202 with the URL to poll."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sweep = serializer.save()
        sweep.refresh_from_db()
        url = reverse("sweep-detail", args=[sweep.pk], request=request)
        return Response({**s.SweepSerializer(sweep).data, "url": url}, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})

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
        failed = request.query_params.get("failed")
        if failed not in (None, "true", "false"):
            raise ValidationError({"failed": "must be true or false"})
        if failed == "true":
            rows = [r for r in rows if r.get("error")]
        page = self.paginate_queryset(rows)
        if page is not None:
            return self.get_paginated_response(page)
        return Response(rows)


@extend_schema_view(list=extend_schema(parameters=RUN_FILTERS[:2]))
class WalkForwardViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Walk-forward studies: per window the parameters chosen in-sample (train) and their out-of-sample (test)
    metrics, plus the stitched out-of-sample account. POST queues one; poll it until done (or failed)."""

    def get_queryset(self):
        q = self.request.query_params
        return selectors.walkforwards(strategy=q.get("strategy"), status=_status(q))

    def get_serializer_class(self):
        if self.action == "create":
            return s.WalkForwardCreateSerializer
        if self.action == "list":
            return s.WalkForwardListSerializer
        return s.WalkForwardSerializer

    @extend_schema(request=s.WalkForwardCreateSerializer, responses={202: s.WalkForwardListSerializer})
    def create(self, request, *args, **kwargs):
        """Store the study and queue it on a `backtest` worker: 202, `Location` (and `url`) is the study to poll."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = serializer.save()
        study.refresh_from_db()  # eager mode may have finished it already
        url = reverse("walkforward-detail", args=[study.pk], request=request)
        return Response({**s.WalkForwardListSerializer(study).data, "url": url}, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})

    @extend_schema(responses={(200, "text/html"): str},
                   description="Offline HTML report: in-sample vs out-of-sample per window, stitched equity.")
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        from apps.backtest.report import walkforward_report

        study = self.get_object()
        if study.status != Status.DONE:
            return Response({"detail": f"walk-forward is {study.status}, no report yet"},
                            status=status.HTTP_409_CONFLICT)
        return HttpResponse(walkforward_report(study), content_type="text/html; charset=utf-8")


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
