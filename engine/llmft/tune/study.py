"""The Optuna study of an experiment: storage, the fixed set of trials, claiming and finishing them.

Exactly `max_trial_count` trials, however many workers share the study and however often they crash:

- The coordinator (worker 0, the only worker of a local `llmft tune`) creates the study and adds the
  trials up front as WAITING trials (topping up after a crash, or when max_trial_count grew). Other
  workers wait until it has.
- A worker claims a WAITING trial with the storage's own atomic WAITING -> RUNNING transition (the one
  `Study.ask` uses), so two workers never get the same trial and nobody creates extra ones; the trial
  then gets its values from the sampler as any asked trial does.
- The claiming worker's index is stored on the trial. A worker that restarts (a relaunched tuner, a
  restarted pod of the Indexed Job) first resumes its own RUNNING trials, with the same values and the
  same folder, so training continues from the trial's last checkpoint.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from llmft.errors import UserError
from llmft.tune import algorithms
from llmft.tune.spec import TuneSpec, optuna_parameters

log = logging.getLogger("llmft.tune")

JOURNAL = "study.journal"
OWNER = "llmft:worker"
PLANNED = "llmft:max_trial_count"
FINGERPRINT = "llmft:fingerprint"
ERROR = "llmft:error"
OUTPUTS = "llmft:outputs"


def journal_url(experiment_dir: Path) -> str:
    return f"journal://{(experiment_dir / JOURNAL).resolve()}"


def masked(url: str) -> str:
    """A storage URL for logs: the password replaced."""
    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", url)


def open_storage(url: str):
    """An Optuna storage from a URL: journal://PATH (a file), grpc://HOST:PORT, or an SQLAlchemy URL."""
    import optuna

    try:
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("grpc://"):
            host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
            if not host or not port.isdigit():
                raise UserError(f"storage {url}: expected grpc://HOST:PORT")
            import warnings

            with warnings.catch_warnings():  # Optuna marks its gRPC proxy experimental (docs/hpo.md says so)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        if re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?://", url):
            return optuna.storages.RDBStorage(url)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - a driver missing, a server unreachable, a bad URL: say which storage
        raise UserError(f"cannot open the study storage {masked(url)}: {error}") from None
    raise UserError(
        f"storage {masked(url)}: expected journal://PATH, grpc://HOST:PORT, sqlite:///PATH, "
        "postgresql://... or mysql://..."
    )


def sampler_and_pruner(spec: TuneSpec, seed_offset: int = 0):
    algorithm = spec.tune.algorithm
    if algorithm.seed is not None and seed_offset:
        algorithm = algorithm.model_copy(update={"seed": algorithm.seed + seed_offset})
    return (
        algorithms.make_sampler(algorithm, optuna_parameters(spec)),
        algorithms.make_pruner(spec.tune.early_stopping),
    )


def prepare(spec: TuneSpec, storage, index: int, wait_seconds: float = 600):
    """Create or load the study; the coordinator (worker 0) makes sure max_trial_count trials exist.

    A seeded sampler's draws depend on the seed alone, so each worker, and each restart of one, gets its
    own seed (seed + 1009 x worker index + trials already started): no two of them repeat the same values.
    """
    from optuna.trial import TrialState

    study = _create_or_load(spec, storage, coordinator=index == 0, wait_seconds=wait_seconds)
    started = len([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    study.sampler = sampler_and_pruner(spec, seed_offset=1009 * index + started)[0]
    return study


def _create_or_load(spec: TuneSpec, storage, coordinator: bool, wait_seconds: float):
    import optuna
    from optuna.trial import TrialState, create_trial

    sampler, pruner = sampler_and_pruner(spec)
    if coordinator:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=spec.tune.objective.direction,
            load_if_exists=True,
        )
        _check_same_spec(study, spec)
        existing = len(study.get_trials(deepcopy=False))
        planned = spec.tune.max_trial_count
        if existing > planned:
            raise UserError(
                f"tune.max_trial_count: the study {spec.name} already has {existing} trials; "
                f"max_trial_count cannot shrink below that, got {planned}"
            )
        for _ in range(planned - existing):
            study.add_trial(create_trial(state=TrialState.WAITING))
        study.set_user_attr(PLANNED, planned)
        return study
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
            if study.user_attrs.get(PLANNED):
                _check_same_spec(study, spec)
                return study
        except KeyError:
            pass  # not created yet
        if time.monotonic() > deadline:
            raise UserError(
                f"study {spec.name} was not created within {wait_seconds:.0f} s: worker 0 creates it; "
                "is worker 0 running with the same storage?"
            )
        time.sleep(2)


def _check_same_spec(study, spec: TuneSpec) -> None:
    fingerprint = spec.fingerprint()
    stored = study.user_attrs.get(FINGERPRINT)
    if stored is None:
        study.set_user_attr(FINGERPRINT, fingerprint)
    elif stored != fingerprint:
        raise UserError(
            f"the study {spec.name} in this storage was started from a different spec (base config, "
            "search space, objective, algorithm or early stopping changed); give the experiment a new "
            "name, or a new experiment folder, to start a new study"
        )


def trial_id(study, number: int) -> int:
    storage = study._storage
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def own_running(study, worker: str) -> list[int]:
    """Numbers of RUNNING trials this worker claimed before (a previous life of this worker)."""
    from optuna.trial import TrialState

    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.system_attrs.get(OWNER) == worker
    ]


def claim(study, worker: str) -> int | None:
    """Take one WAITING trial for `worker` (atomic in every Optuna storage); None when none is left.

    Optuna's set-to-RUNNING is the claim; the owner is written right after it. `own_running` counts only
    trials that name their owner: a trial between those two writes belongs to the worker claiming it, not to
    whoever looks at that moment (seen in CI: two workers ran one trial, and the second to finish it crashed).
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        identifier = trial_id(study, trial.number)
        try:
            if storage.set_trial_state_values(identifier, state=TrialState.RUNNING):
                storage.set_trial_system_attr(identifier, OWNER, worker)
                return trial.number
        except UpdateFinishedTrialError:
            continue
    return None


def suggest(study, number: int, spec: TuneSpec) -> dict[str, Any]:
    """The trial's values, by parameter name: sampled now, or the ones stored when it was first claimed."""
    import optuna

    trial = optuna.trial.Trial(study, trial_id(study, number))
    values = {}
    for parameter in optuna_parameters(spec):
        name = parameter.name
        if parameter.type == "categorical":
            values[name] = trial.suggest_categorical(name, list(parameter.values))
        elif parameter.type == "int":
            values[name] = trial.suggest_int(
                name, int(parameter.min), int(parameter.max), step=int(parameter.step or 1), log=parameter.log
            )
        else:
            values[name] = trial.suggest_float(
                name, parameter.min, parameter.max, step=parameter.step, log=parameter.log
            )
    return values


def finish(study, number: int, state: str, value: float | None = None, attrs: dict | None = None) -> None:
    """Record a trial's end: complete (with value), pruned or failed, plus what we learned about it."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        for key, item in (attrs or {}).items():
            storage.set_trial_user_attr(trial_id(study, number), key, item)
    except UpdateFinishedTrialError:
        log.warning("trial %d was already finished by another worker: its record there is kept", number)
        return
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
    try:
        study.tell(number, value if state == "complete" else None, state=states[state], skip_if_finished=True)
    except RuntimeError as error:
        # GridSampler stops the study when its grid is used up, which Optuna allows only inside
        # study.optimize. The trial's state is stored before that (tell stores it in a `finally`), and the
        # fixed set of trials ends the experiment anyway.
        if "Study.stop" not in str(error):
            raise
