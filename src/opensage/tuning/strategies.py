"""A tuning job's search, on Optuna's ask-and-tell API with one durable study per tuning job.

Strategies map to Optuna as follows:

* **Bayesian** -> ``TPESampler`` (a model-based sampler: numpy only, handles categorical and
  conditional spaces, and ``constant_liar`` keeps parallel trials apart). ``GPSampler`` would be the
  closer match to AWS's Gaussian-process model, but it needs PyTorch, an optional extra here.
* **Random** -> ``RandomSampler(seed=RandomSeed)``.
* **Grid** -> every point of the grid (categorical and integer values) enqueued once, in order.
* **Hyperband** -> TPE with ``HyperbandPruner(MinResource, MaxResource)``, fed the objective each
  trial logs per round or epoch.

``TrainingJobEarlyStoppingType: Auto`` is AWS's median stopping rule (:func:`median_rule`), as an
Optuna pruner. Scaling: ``Logarithmic`` samples on a log scale, ``ReverseLogarithmic`` samples
``1 - x`` on a log scale. The study lives in an Optuna journal file, so a restarted platform
reloads it and the tuning job goes on where it was.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.tuning.spec import Definition, ParamRange, TuningJobSpec, grid_points

DEFINITION_PARAM = "_definition"
MEDIAN_MIN_TRIALS = 3  # earlier trials needed before the median rule stops one
MEDIAN_WARMUP_STEPS = 1  # rounds a trial always gets before the median rule looks at it
SERIES_ATTR = "opensage:objective_per_round"  # a trial's whole series (Search.report)
CONVERGENCE_WINDOW = 5  # trials without more than 1% improvement that make a tuning job "converged"
CONVERGENCE_MIN_TRIALS = 10


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One trial the study asks for: its number, algorithm, and hyperparameters as strings."""

    number: int
    definition: str | None
    hyperparameters: dict[str, str]


def format_value(r: ParamRange, value: Any) -> str:
    if r.kind == "Integer":
        return str(int(value))
    if r.kind == "Continuous":
        return f"{float(value):.10g}"
    return str(value)


def startup_trials(max_jobs: int) -> int:
    """Random trials before TPE models the space (a quarter of the budget, 3 to 10)."""
    return max(3, min(10, max_jobs // 4))


def sampler_for(spec: TuningJobSpec, seed: int | None = None) -> Any:
    import optuna

    if spec.strategy in ("Random", "Grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(spec.max_jobs))


def pruner_for(spec: TuningJobSpec) -> Any:
    import optuna

    if spec.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(spec.min_resource, spec.max_resource, reduction_factor=3)
    if spec.early_stopping:
        return _median_pruner(spec.maximize)
    return optuna.pruners.NopPruner()


def median_rule(
    current: float,
    step: int,
    earlier: Sequence[Mapping[int, float]],
    maximize: bool,
    min_trials: int = MEDIAN_MIN_TRIALS,
) -> bool:
    """AWS's early-stopping rule: stop when ``current`` (the objective at ``step``) is worse than the
    median of the earlier trials' running averages of the objective up to the same step."""
    averages = []
    for series in earlier:
        values = [v for s, v in series.items() if s <= step]
        if values:
            averages.append(statistics.fmean(values))
    if len(averages) < min_trials:
        return False
    median = statistics.median(averages)
    return current < median if maximize else current > median


def series_of(trial: Any) -> dict[int, float]:
    """A trial's objective per round: the series :meth:`Search.report` kept, else its intermediate values."""
    series = trial.system_attrs.get(SERIES_ATTR)
    if series is None:
        return dict(trial.intermediate_values)
    return {i + 1: float(v) for i, v in enumerate(series) if v is not None}


def _median_pruner(maximize: bool) -> Any:
    import optuna

    class MedianRule(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None or step < MEDIAN_WARMUP_STEPS:
                return False
            done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            earlier = [series_of(t) for t in study.get_trials(deepcopy=False, states=done)]
            return median_rule(trial.intermediate_values[step], step, earlier, maximize)

    return MedianRule()


def param_key(definition: Definition, name: str, multi: bool) -> str:
    return f"{definition.name}:{name}" if multi else name


def distribution(r: ParamRange) -> Any:
    """The Optuna distribution of a range (in the sampled space: ``1 - x`` for ReverseLogarithmic)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if r.kind == "Categorical":
        return CategoricalDistribution(list(r.values))
    if r.kind == "Integer":
        return IntDistribution(int(r.low), int(r.high), log=r.scaling == "Logarithmic")
    if r.scaling == "ReverseLogarithmic":
        return FloatDistribution(1.0 - r.high, 1.0 - r.low, log=True)
    return FloatDistribution(r.low, r.high, log=r.scaling == "Logarithmic")


def to_hyperparameter(r: ParamRange, sampled: Any) -> str:
    return format_value(r, 1.0 - sampled if r.scaling == "ReverseLogarithmic" else sampled)


def from_hyperparameter(r: ParamRange, value: str) -> Any | None:
    """A hyperparameter string as the range's sampled value, or None when it is outside the range."""
    try:
        if r.kind == "Categorical":
            return value if value in r.values else None
        number = float(value)
    except ValueError:
        return None
    if not (r.low <= number <= r.high):
        return None
    if r.kind == "Integer":
        return int(number)
    return 1.0 - number if r.scaling == "ReverseLogarithmic" else number


def _suggest(trial: Any, key: str, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


class Search:
    """The study of one tuning job (in a journal file at ``path``, or in memory when it is None)."""

    def __init__(self, spec: TuningJobSpec, path: Path | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec = spec
        self.multi = len(spec.definitions) > 1
        storage: Any
        if path is None:
            storage = optuna.storages.InMemoryStorage()
        else:
            from optuna.storages.journal import JournalFileBackend

            path.parent.mkdir(parents=True, exist_ok=True)
            storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        self.study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            load_if_exists=True,
            direction="maximize" if spec.maximize else "minimize",
            sampler=sampler_for(spec, spec.seed),
            pruner=pruner_for(spec),
        )
        if spec.name not in names and spec.strategy == "Grid":
            for definition, hps in grid_points(spec.definitions):
                self.study.enqueue_trial(self._grid_params(definition, hps))

    def _grid_params(self, definition: str | None, hps: Mapping[str, str]) -> dict[str, Any]:
        d = self.spec.definition(definition)
        params: dict[str, Any] = {DEFINITION_PARAM: definition} if self.multi else {}
        for r in d.ranges:
            params[param_key(d, r.name, self.multi)] = from_hyperparameter(r, hps[r.name])
        return params

    def ask(self) -> Suggestion:
        """The next trial's hyperparameters (recorded in the study as running)."""
        if self.spec.seed is not None:
            # A sampler's random state is not in the study: seeded per trial, a reloaded study does not
            # repeat the suggestions it made before a restart, and a RandomSeed still gives the same trials.
            self.study.sampler = sampler_for(self.spec, self.spec.seed + len(self.study.get_trials(deepcopy=False)))
        trial = self.study.ask()
        name = None
        if self.multi:
            name = trial.suggest_categorical(DEFINITION_PARAM, [d.name for d in self.spec.definitions])
        d = self.spec.definition(name)
        hps = {}
        for r in d.ranges:
            sampled = _suggest(trial, param_key(d, r.name, self.multi), distribution(r))
            hps[r.name] = to_hyperparameter(r, sampled)
        return Suggestion(trial.number, d.name, hps)

    def _trial(self, number: int) -> Any:
        import optuna

        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return optuna.trial.Trial(self.study, trial_id)

    def report(self, number: int, values: Sequence[float]) -> bool:
        """Record the objective per round of a running trial (``values[i]`` after round ``i + 1``);
        True when the strategy (Hyperband, or the median rule) says to stop it now.

        The whole series is one attribute of the trial, written once per call; only its newest round is
        an intermediate value (one journal write, not one per round: a trial logs thousands of rounds),
        which is all Hyperband reads of the trial itself, and the median rule reads earlier trials'
        series from the attribute."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        frozen = storage.get_trial(trial_id)
        if frozen.state.is_finished():
            return False
        finite = [i + 1 for i, v in enumerate(values) if math.isfinite(v)]
        if not finite or (frozen.last_step is not None and finite[-1] <= frozen.last_step):
            return False
        step = finite[-1]
        storage.set_trial_system_attr(trial_id, SERIES_ATTR, [v if math.isfinite(v) else None for v in values])
        trial = self._trial(number)
        trial.report(values[step - 1], step)
        return bool(trial.should_prune())

    def tell(self, number: int, value: float | None, *, stopped_early: bool = False) -> None:
        """End a trial: its objective (None: it has none, the trial failed)."""
        import optuna

        state = optuna.trial.TrialState
        frozen = self.study._storage.get_trial(
            self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )
        if frozen.state.is_finished():
            return
        if value is None or not math.isfinite(value):
            self.study.tell(number, state=state.FAIL)
        elif stopped_early:
            trial = self._trial(number)
            if frozen.last_step is None:
                trial.report(value, 1)
            self.study.tell(number, state=state.PRUNED)
        else:
            self.study.tell(number, value)

    def running(self) -> list[int]:
        """Numbers of the trials the study considers running (asked, not told)."""
        import optuna

        return [t.number for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]

    def waiting(self) -> int:
        """Grid points not yet asked for."""
        import optuna

        return len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))

    def seed(self, definition: str | None, hyperparameters: Mapping[str, str], value: float) -> bool:
        """Warm start: add a parent job's finished trial; False when its values lie outside this job's ranges."""
        import optuna

        d = next((x for x in self.spec.definitions if x.name == definition), None)
        if d is None:
            d = self.spec.definitions[0] if not self.multi else None
        if d is None:
            return False
        params: dict[str, Any] = {DEFINITION_PARAM: d.name} if self.multi else {}
        dists: dict[str, Any] = {}
        if self.multi:
            dists[DEFINITION_PARAM] = optuna.distributions.CategoricalDistribution(
                [x.name for x in self.spec.definitions]
            )
        for r in d.ranges:
            given = hyperparameters.get(r.name)
            sampled = None if given is None else from_hyperparameter(r, given)
            if sampled is None:
                return False
            key = param_key(d, r.name, self.multi)
            params[key], dists[key] = sampled, distribution(r)
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
        return True


def improving_streak(values: Sequence[float], maximize: bool) -> int:
    """How many trials (in order) have passed since the best objective last improved."""
    best: float | None = None
    since = 0
    for v in values:
        if best is None or (v > best if maximize else v < best):
            best, since = v, 0
        else:
            since += 1
    return since


def converged(values: Sequence[float], maximize: bool) -> bool:
    """No significant improvement (1% or less) of the best objective over the last trials."""
    if len(values) < CONVERGENCE_MIN_TRIALS:
        return False
    pick = max if maximize else min
    before, now = pick(values[:-CONVERGENCE_WINDOW]), pick(values)
    scale = max(abs(before), 1e-12)
    return abs(now - before) / scale <= 0.01


def reached(value: float, target: float | None, maximize: bool) -> bool:
    if target is None:
        return False
    return value >= target if maximize else value <= target
