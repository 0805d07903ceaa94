"""Distributed, resumable parameter search with Optuna (`manage.py optimize`). Services: they write rows.

Protocol (why no trial is lost or counted twice, whoever is killed):
* Optuna's RDB storage (the project's database, or `--storage`) is the truth for the search: which trials exist
  (asked) and which are finished (told). The `StudyTrial` rows are the truth for evaluations.
* The command ASKS a trial (Optuna: RUNNING), stores a pending `StudyTrial(study, number)` (unique) and enqueues
  `optimize_trial_task(row id)` on the `backtest` queue after commit. It keeps `batch` trials in flight.
* A worker evaluates the row's parameters and writes the result with `UPDATE ... WHERE state = 'pending'`: a
  redelivered or duplicated task finds the row finished and does nothing (idempotent).
* The command TELLS Optuna each finished row (complete with its value, or fail with the reason) and marks it told.
  Telling an already-finished Optuna trial is skipped, so a crash between tell and the `told` flag counts once.
* Resume (same study name): every Optuna trial still RUNNING gets its row (created from Optuna's stored parameters if
  the crash came between ask and row) and is re-enqueued if pending; rows that stay pending longer than
  `requeue_after` seconds (a worker killed mid-trial) are re-enqueued too. The budget counts finished Optuna trials.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.backtest import services
from apps.backtest.engine.chunk import run_chunk
from apps.backtest.engine.metrics import jsonable
from apps.backtest.engine.ranking import LOWER_IS_BETTER, metric_value, rank_results
from apps.backtest.models import Status, Study, StudyTrial
from apps.bots.trading.candles import CandleArrays

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")


# --- space -------------------------------------------------------------------------------------------------------

def distributions(strategy_cls: type, space: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(searched: name -> optuna distribution, fixed: name -> value) from a space JSON.

    Per parameter: [lo, hi] or {"min", "max", "step", "log"} (int/float), {"choices": [...]}, or a scalar (fixed).
    Bounds default to the Param's declared min/max; a parameter absent from the space keeps its default."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params = {p.name: p for p in strategy_cls.param_space()}
    unknown = sorted(set(space) - set(params))
    if unknown:
        raise services.BacktestInputError(f"--space: unknown parameter {unknown[0]!r} for strategy "
                                          f"{strategy_cls.name!r}: expected one of {', '.join(params)}")
    searched: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for name, spec in space.items():
        p = params[name]
        if isinstance(spec, list) and len(spec) == 2 and p.type in (int, float):
            spec = {"min": spec[0], "max": spec[1]}
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, Mapping):
            fixed[name] = spec
            continue
        if "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise services.BacktestInputError(f"--space: {name}: choices must not be empty")
            searched[name] = CategoricalDistribution(choices)
            continue
        lo, hi = spec.get("min", p.min), spec.get("max", p.max)
        if p.type is bool:
            searched[name] = CategoricalDistribution([False, True])
            continue
        if lo is None or hi is None:
            raise services.BacktestInputError(f"--space: {name} needs min and max (the strategy declares no range)")
        if not lo < hi:
            raise services.BacktestInputError(f"--space: {name}: min {lo} must be < max {hi}")
        log = bool(spec.get("log", False))
        step = spec.get("step")
        try:
            if p.type is int:
                searched[name] = IntDistribution(int(lo), int(hi), step=int(step or 1), log=log)
            elif p.type is float:
                searched[name] = FloatDistribution(float(lo), float(hi), step=None if step is None else float(step),
                                                   log=log)
            else:
                raise services.BacktestInputError(f"--space: {name} is a {p.type.__name__}: give its choices")
        except ValueError as exc:
            raise services.BacktestInputError(f"--space: {name}: {exc}") from None
    if not searched:
        raise services.BacktestInputError("--space searches no parameter: give at least one range or choice list")
    return searched, fixed


def direction_of(metric: str) -> str:
    name = metric.lstrip("-")
    return "minimize" if (name in LOWER_IS_BETTER) != metric.startswith("-") else "maximize"


# --- evaluation (the worker side) ---------------------------------------------------------------------------------

def score(strategy_cls: type, parameters: Mapping[str, Any], arrays: Any, rules: Any, timeframe: str,
          metric: str, folds: int = 1) -> tuple[float | None, dict[str, Any] | None, str]:
    """(value, metrics, error) of one parameter set: the metric over the whole data, or its mean over `folds`
    consecutive time windows (each window backtested alone; the metrics returned are the whole-data ones)."""
    name = metric.lstrip("-")
    rows = run_chunk(arrays, strategy_cls, [dict(parameters)], rules, timeframe)
    row = rows[0]
    if row["error"]:
        return None, None, row["error"]
    if folds <= 1:
        value = metric_value(row, name)
        return value, row["metrics"], "" if value is not None else f"metric {name!r} is undefined for this set"
    n = len(arrays)
    edges = [round(i * n / folds) for i in range(folds + 1)]
    values = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        part = run_chunk(arrays.slice(a, b), strategy_cls, [dict(parameters)], rules, timeframe)[0]
        v = metric_value(part, name)
        if v is None:
            return None, row["metrics"], f"metric {name!r} is undefined on fold rows {a}..{b - 1}"
        values.append(v)
    return float(sum(values) / len(values)), row["metrics"], ""


_DATA_CACHE: dict[int, tuple[Any, Any]] = {}


def evaluate_trial(trial_id: int) -> StudyTrial | None:
    """Evaluate one pending trial and store the result; a trial already finished is left alone (idempotent)."""
    trial = StudyTrial.objects.select_related("study").filter(pk=trial_id).first()
    if trial is None or trial.state != StudyTrial.State.PENDING:
        return trial
    study = trial.study
    t0 = time.perf_counter()
    try:
        cached = _DATA_CACHE.get(study.pk)
        if cached is None:
            data = services.load_data(study)
            if len(data.df) == 0:
                raise services.BacktestInputError(f"no candles for {study.market_label} in the selected range")
            cached = _DATA_CACHE[study.pk] = (CandleArrays.from_frame(data.df), services.rules_for(study))
            while len(_DATA_CACHE) > 4:
                _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        arrays, rules = cached
        cls = services.resolve_strategy(study.strategy)
        value, metrics, error = score(cls, trial.parameters, arrays, rules, study.timeframe, study.metric,
                                      study.folds)
    except Exception as exc:  # noqa: BLE001 - a trial that cannot be evaluated is a failed trial, with the reason
        value, metrics, error = None, None, f"{type(exc).__name__}: {exc}"
    state = StudyTrial.State.DONE if value is not None and not error else StudyTrial.State.FAILED
    StudyTrial.objects.filter(pk=trial_id, state=StudyTrial.State.PENDING).update(
        state=state, value=value, metrics=jsonable(metrics) if metrics else None, error=error[:2000],
        finished_at=timezone.now(), compute_seconds=time.perf_counter() - t0,
    )
    return StudyTrial.objects.get(pk=trial_id)


# --- the study (the command side) ---------------------------------------------------------------------------------

def storage_url(explicit: str | None = None) -> str:
    """SQLAlchemy URL of Optuna's RDB storage: `explicit`, else this process's Django default database (PostgreSQL
    via psycopg2, or the embedded SQLite file)."""
    if explicit:
        return explicit
    from django.db import connections

    db = connections["default"].settings_dict
    if "sqlite" in db["ENGINE"]:
        return f"sqlite:///{db['NAME']}"
    auth = db.get("USER") or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgresql+psycopg2://{auth}@{host}:{port}/{db['NAME']}"


def _checked_config(*, strategy: str, space: Mapping[str, Any], metric: str, sampler: str, folds: int,
                    data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(stored configuration, distributions, fixed) of a study, every part validated (input errors name it)."""
    if sampler not in SAMPLERS:
        raise services.BacktestInputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if folds < 1:
        raise services.BacktestInputError(f"--folds must be >= 1, got {folds}")
    cls = services.resolve_strategy(strategy)
    searched, fixed = distributions(cls, space)
    services.build_rules(**services._rules_only(data))
    services.validate_range(data.get("start"), data.get("end"))
    config = {"strategy": strategy, "space": jsonable(dict(space)), "metric": metric, "folds": folds, **data}
    return config, searched, fixed


def _study_row(name: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[Study, bool]:
    """The Study row `name`: created with `config`, or the existing one when its configuration is the same (another
    configuration under an old name is an input error naming the first difference)."""
    with transaction.atomic():
        row, created = Study.objects.select_for_update().get_or_create(name=name, defaults={**config, **defaults})
        if not created:
            diff = [k for k, v in config.items() if getattr(row, k) != v]
            if diff:
                raise services.BacktestInputError(
                    f"study {name!r} exists with another {diff[0]} ({getattr(row, diff[0])!r}); use another --study "
                    "name, or the same arguments to continue it")
    return row, created


def open_study(*, name: str, strategy: str, space: Mapping[str, Any], metric: str, sampler: str = "tpe",
               seed: int | None = None, folds: int = 1, storage: str | None = None, **data: Any):
    """(Study row, optuna study, distributions, fixed): created, or loaded when `name` exists with the same
    strategy, space, metric, data and rules (a different configuration under an old name is an input error)."""
    import optuna

    config, searched, fixed = _checked_config(strategy=strategy, space=space, metric=metric, sampler=sampler,
                                              folds=folds, data=data)
    row, created = _study_row(name, config, {"direction": direction_of(metric), "sampler": sampler, "seed": seed})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(storage)
    if created:  # an Optuna study of this name without its row (the row was deleted): start it afresh
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass
    samp = (optuna.samplers.TPESampler(seed=row.seed) if row.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=row.seed))
    ostudy = optuna.create_study(study_name=name, storage=url, sampler=samp,
                                 direction=row.direction, load_if_exists=True)
    return row, ostudy, searched, fixed


def _enqueue(trial_ids: list[int]) -> None:
    from apps.backtest.tasks import optimize_trial_task

    if not trial_ids:
        return
    StudyTrial.objects.filter(pk__in=trial_ids).update(enqueued_at=timezone.now())
    for tid in trial_ids:
        transaction.on_commit(lambda tid=tid: optimize_trial_task.delay(tid))


def _tell(ostudy: Any, trial: StudyTrial) -> bool:
    """Tell Optuna one finished row; False when Optuna already has it finished (a resumed crash: counted once)."""
    import optuna

    frozen = ostudy._storage.get_trial(ostudy._storage.get_trial_id_from_study_id_trial_number(
        ostudy._study_id, trial.number))
    if frozen.state.is_finished():
        return False
    if trial.state == StudyTrial.State.DONE and trial.value is not None and math.isfinite(trial.value):
        ostudy.tell(trial.number, trial.value)
    else:
        ostudy._storage.set_trial_user_attr(frozen._trial_id, "error", trial.error[:500])
        ostudy.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return True


def run_study(*, row: Study, ostudy: Any, searched: dict[str, Any], fixed: dict[str, Any], n_trials: int,
              batch: int, poll: float = 0.2, requeue_after: float = 600.0,
              progress: Callable[[int, int], None] | None = None, deadline: float | None = None) -> Study:
    """Ask/enqueue/tell until `n_trials` Optuna trials of the study are finished (complete or failed)."""
    import optuna

    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    Study.objects.filter(pk=row.pk).update(status=Status.RUNNING, n_trials=n_trials)
    # resume: trials asked by an earlier process and never told
    for frozen in ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        with transaction.atomic():
            trial, created = StudyTrial.objects.get_or_create(
                study=row, number=frozen.number, defaults={"parameters": {**fixed, **frozen.params}})
            if trial.state == StudyTrial.State.PENDING:
                _enqueue([trial.pk])
    in_flight: set[int] = set(StudyTrial.objects.filter(study=row, told=False).values_list("number", flat=True))
    done = len(ostudy.get_trials(deepcopy=False, states=finished_states))
    last_report = -1
    while True:
        # tell what the workers finished
        for trial in StudyTrial.objects.filter(study=row, told=False).exclude(state=StudyTrial.State.PENDING):
            told_now = _tell(ostudy, trial)  # False: told by a process killed before it marked the row
            StudyTrial.objects.filter(pk=trial.pk).update(told=True)
            in_flight.discard(trial.number)
            done += told_now  # an already-finished trial is in `done` from Optuna's count above
        if progress is not None and done != last_report:
            progress(min(done, n_trials), n_trials)
            last_report = done
        if done >= n_trials and not in_flight:
            break
        # keep `batch` trials in flight, never asking beyond the budget
        asked = []
        while len(in_flight) < batch and done + len(in_flight) < n_trials:
            otrial = ostudy.ask(searched)
            with transaction.atomic():
                trial = StudyTrial.objects.create(study=row, number=otrial.number,
                                                  parameters=jsonable({**fixed, **otrial.params}))
                asked.append(trial.pk)
                _enqueue([trial.pk])
            in_flight.add(otrial.number)
        if not asked:
            stale = StudyTrial.objects.filter(study=row, state=StudyTrial.State.PENDING,
                                              enqueued_at__lt=timezone.now() - timezone.timedelta(
                                                  seconds=requeue_after))
            ids = list(stale.values_list("pk", flat=True))
            if ids:
                logger.warning("study %s: re-enqueuing %d trial(s) pending for more than %.0fs", row.name, len(ids),
                               requeue_after)
                with transaction.atomic():
                    _enqueue(ids)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {row.name}: {len(in_flight)} trial(s) still in flight at the deadline")
            time.sleep(poll)
    return finish_study(row.pk, ostudy)


def finish_study(study_id: int, ostudy: Any) -> Study:
    """Store the best trial on the row; status done."""
    best_value, best_params = None, None
    try:
        best = ostudy.best_trial
        best_value, best_params = best.value, best.params
    except ValueError:  # no completed trial
        pass
    row = Study.objects.get(pk=study_id)
    fixed = {k: v for k, v in (row.trials.order_by("number").values_list("parameters", flat=True).first() or {}
                                ).items() if best_params is not None and k not in best_params}
    Study.objects.filter(pk=study_id).update(
        status=Status.DONE, best_value=best_value,
        best_parameters=jsonable({**fixed, **best_params}) if best_params is not None else None)
    return Study.objects.get(pk=study_id)


def ranking(study: Study, top_k: int | None = 10) -> list[dict[str, Any]]:
    """The study's finished trials best first (failed last), in the sweep ranking's shape."""
    rows = [{"index": t.number, "parameters": t.parameters, "metrics": t.metrics or {}, "error": t.error,
             "value": t.value}
            for t in study.trials.exclude(state=StudyTrial.State.PENDING)]
    for r in rows:
        r["metrics"] = {**r["metrics"], "__value__": r["value"]}
    metric = "__value__" if study.direction == "maximize" else "-__value__"
    out = rank_results(rows, metric, top_k)
    for r in out:
        r["metrics"].pop("__value__", None)
    return out


def bot_configs(*, strategy: str, parameter_sets: list[Mapping[str, Any]], exchange: str, symbol: str,
                timeframe: str, name_prefix: str, rules: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Bot config dicts (the `config/bots/*.json` shape) for parameter sets, checked by the bots' validator
    (apps.bots.config.parse_config, the one `bots_from_study` and `sync_bots` use): for files a user edits first."""
    from apps.bots.config import parse_config

    out = []
    for i, params in enumerate(parameter_sets, start=1):
        cfg: dict[str, Any] = {"name": f"{name_prefix}-{i}", "strategy": strategy, "parameters": dict(params),
                               "exchange": exchange, "symbol": symbol, "timeframe": timeframe}
        for key, value in (rules or {}).items():
            if value is not None and key in ("initial_balance", "fee", "slippage", "fraction", "stop_loss",
                                             "take_profit"):
                cfg["fee_rate" if key == "fee" else key] = value
        cfg["parameters"] = jsonable(dict(parse_config(cfg, source=f"{name_prefix} #{i}").parameters))
        out.append(cfg)
    return out


def bots_from_study(*, study_id: int, top: int, start: bool = False) -> list:
    """Paper bots for the `top` best finished trials of a study on a stored market (its strategy, market and fill
    rules; a walk-forward study: its latest window's), named `study<id>-<rank>-<param><value>...`, through the bots
    services like `bots_from_sweep`; existing ones are updated. `start`: start them (from the next closed candle)."""
    from apps.common.errors import ApplicationError

    study = services.research_row_for_bots(Study, study_id, top=top)
    ranked = [r for r in ranking(deployable_study(study), None) if not r["error"] and r["value"] is not None][:top]
    if not ranked:
        raise ApplicationError(f"study #{study_id} ({study.name}) has no finished trial yet", field="study_id")
    return services.bots_from_parameter_sets(study, [r["parameters"] for r in ranked], label=f"study{study.pk}",
                                             origin=f"study:{study.pk}", start=start)


# --- walk-forward optimisation (optimize --walk-forward) ----------------------------------------------------------

def open_walk_forward(*, name: str, strategy: str, space: Mapping[str, Any], metric: str, train: int, test: int,
                      step: int | None = None, sampler: str = "tpe", seed: int | None = None, folds: int = 1,
                      **data: Any) -> Study:
    """The walk-forward study row `name` (created, or the same configuration continued): it holds the plan and, when
    done, the per-window report; each window's in-sample search is its own child study (`run_walk_forward`)."""
    config, _, _ = _checked_config(strategy=strategy, space=space, metric=metric, sampler=sampler, folds=folds,
                                   data=data)
    for what, size in (("--train", train), ("--test", test), ("--step", step)):
        if size is not None and size <= 0:
            raise services.BacktestInputError(f"{what} must be a positive number of candles, got {size}")
    plan = {"train": int(train), "test": int(test), "step": None if step is None else int(step)}
    row, created = _study_row(name, config, {"direction": direction_of(metric), "sampler": sampler, "seed": seed,
                                             "walk_forward": plan})
    stored = {k: (row.walk_forward or {}).get(k) for k in plan}
    if stored != plan:
        raise services.BacktestInputError(
            f"study {name!r} exists with another walk-forward plan ({stored if row.walk_forward else 'none'}); use "
            "another --study name, or the same arguments to continue it")
    return row


def run_walk_forward(*, row: Study, n_trials: int, batch: int, requeue_after: float = 600.0,
                     storage: str | None = None, progress: Callable[[int, int], None] | None = None,
                     deadline: float | None = None) -> Study:
    """Re-optimise on every rolling train window and evaluate each window's best set on the test window after it.

    Per window, an Optuna study `<name>/w<i>` (a child Study row: the same space, sampler, seed, metric and rules,
    its data the train window's candles) runs `n_trials` trials on the workers through `run_study`, so each window
    is distributed and resumable like any study; the windows, the out-of-sample evaluation and the stitched curve
    are the walk-forward engine's (`engine.walkforward.walk_forward` with this search as its `choose`). A failure
    marks the study failed; running the same command again continues it."""
    Study.objects.filter(pk=row.pk).update(status=Status.RUNNING, n_trials=n_trials)
    try:
        return _run_walk_forward(row, n_trials=n_trials, batch=batch, requeue_after=requeue_after, storage=storage,
                                 progress=progress, deadline=deadline)
    except BaseException:
        Study.objects.filter(pk=row.pk, status=Status.RUNNING).update(status=Status.FAILED)  # resumable: same name
        raise


def _run_walk_forward(row: Study, *, n_trials: int, batch: int, requeue_after: float, storage: str | None,
                      progress: Callable[[int, int], None] | None, deadline: float | None) -> Study:
    from apps.backtest.engine import walkforward as wf

    plan = dict(row.walk_forward or {})
    loaded = services.load_data(row)
    if len(loaded.df) == 0:
        raise services.BacktestInputError(f"no candles for {row.market_label} in the selected range")
    arrays = CandleArrays.from_frame(loaded.df)
    try:
        n_windows = len(wf.plan_windows(len(arrays), plan["train"], plan["test"], plan.get("step")))
    except wf.WalkForwardError as exc:
        raise services.BacktestInputError(str(exc)) from None
    data = {k: getattr(row, k) for k in ("exchange", "symbol", "timeframe", "data_file", "time_label", "fee",
                                         "slippage", "initial_balance", "fraction", "stop_loss", "take_profit")}

    def choose(window: wf.Window, train: Any) -> dict[str, Any]:
        child, ostudy, searched, fixed = open_study(
            name=f"{row.name}/w{window.index}", strategy=row.strategy, space=row.space, metric=row.metric,
            sampler=row.sampler, seed=row.seed, folds=row.folds, storage=storage,
            **data, start=int(train.timestamp[0]), end=int(train.timestamp[-1]))
        Study.objects.filter(pk=child.pk).update(parent=row)

        def window_progress(done: int, total: int) -> None:
            if progress is not None:
                progress(window.index * n_trials + done, n_windows * n_trials)

        child = run_study(row=child, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=n_trials, batch=batch,
                          requeue_after=requeue_after, progress=window_progress, deadline=deadline)
        finished = [r for r in ranking(child, None) if not r["error"] and r["value"] is not None]
        extra = {"study": child.name, "study_id": child.pk, "trials": child.trials.exclude(
            state=StudyTrial.State.PENDING).count()}
        if not finished:
            return {"parameters": {}, "metrics": None, "error": f"no trial of {child.name} finished", **extra}
        best = finished[0]
        return {"parameters": best["parameters"], "metrics": best["metrics"], "error": "",
                "in_sample_value": best["value"], **extra}

    try:
        out = wf.walk_forward(arrays, services.resolve_strategy(row.strategy), None, services.rules_for(row),
                              row.timeframe, train=plan["train"], test=plan["test"], step=plan.get("step"),
                              metric=row.metric, choose=choose)
    except wf.WalkForwardError as exc:
        raise services.BacktestInputError(str(exc)) from None
    out["warnings"] = services.merge_warnings(loaded.warnings, out["warnings"])
    last = next((w for w in reversed(out["windows"]) if not w.get("error")), None)
    Study.objects.filter(pk=row.pk).update(
        status=Status.DONE, walk_forward=jsonable({**plan, **out}),
        best_value=None if last is None else last.get("in_sample_value"),
        best_parameters=None if last is None else last["parameters"])
    return Study.objects.get(pk=row.pk)


def deployable_study(study: Study) -> Study:
    """The study whose trials become bots: itself, or for a walk-forward study its latest window's search (the
    parameters chosen on the most recent data)."""
    if study.walk_forward is None:
        return study
    return study.window_studies.order_by("-end", "-pk").first() or study
