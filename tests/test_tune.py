"""`llmft tune`: spec checks, and real experiments of the tiny model (trials are real training processes,
the study a real Optuna journal, the multi-worker study in a real S3 bucket's experiment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmft.cli import main
from llmft.errors import UserError
from llmft.tune.spec import load_spec

QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
]
LR_KEY = "finetuning_config.training_args.learning_rate"
RANK_KEY = "finetuning_config.peft_conf.peft_kwargs.r"
DROPOUT_KEY = "finetuning_config.peft_conf.peft_kwargs.lora_dropout"
MODEL = "default-bucket/models/tiny"  # where checks never load a model (experiments use the tiny model)


def write_data(path: Path, repeat: int = 6) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * repeat))
    return path


def make_spec(model: str, data: str, name: str = "tiny-search", max_steps: int = 12, **tune) -> dict:
    """Learning rate (log), LoRA rank (int) and dropout (categorical); lr below ~1e-5 barely trains."""
    settings = {
        "objective": {"metric": "eval_loss", "direction": "minimize", "additional_metrics": ["loss"]},
        "search_space": [
            {"key": LR_KEY, "type": "double", "min": 1e-7, "max": 3e-2, "log": True},
            {"key": RANK_KEY, "type": "int", "min": 2, "max": 16},
            {"key": DROPOUT_KEY, "type": "categorical", "values": [0.0, 0.1]},
        ],
        "algorithm": {"name": "tpe", "seed": 13, "settings": {"n_startup_trials": 10}},
        "early_stopping": {"name": "median", "settings": {"min_trials_required": 1, "start_step": 4}},
        "max_trial_count": 4,
        "parallel_trial_count": 2,
    }
    settings.update(tune)
    return {
        "name": name,
        "basemodel": model,
        "mergeAdapter": True,
        "finetuning_config": {
            "method": "sft",
            "data_conf": {
                "training_data": {"datasets": [{"path": data}]},
                "validation_data": {"type": "AUTO_SPLIT", "ratio": 0.2},
            },
            "training_args": {
                "learning_rate": 1e-3,
                "lr_scheduler_type": "constant",
                "max_steps": max_steps,
                "logging_steps": 2,
                "eval_strategy": "steps",
                "eval_steps": 2,
                "save_steps": 2,
                "report_to": [],
            },
            "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
            "peft_conf": {"peft_type": "LORA", "peft_kwargs": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}},
            "sft_args": {"max_seq_length": 128},
        },
        "tune": settings,
    }


@pytest.fixture
def data_file(tmp_path) -> Path:
    return write_data(tmp_path / "train.jsonl")


def spec_errors(spec: dict) -> str:
    with pytest.raises(UserError) as caught:
        load_spec(spec)
    return str(caught.value)


# ------------------------------------------------------------------------------------------ spec checks


def test_a_good_spec_loads_with_its_defaults(data_file):
    spec = load_spec(make_spec(MODEL, str(data_file)))
    assert spec.tune.max_trial_count == 4 and spec.tune.max_failed_trial_count == 3
    assert [p.label for p in spec.tune.search_space] == ["learning_rate", "r", "lora_dropout"]
    assert spec.base_config()["run_conf"] == {"model": MODEL, "merge_adapter": True}


def test_bad_specs_fail_at_start_with_every_key_path_and_fix(data_file):
    spec = make_spec(MODEL, str(data_file))
    space = spec["tune"]["search_space"]
    space[0]["key"] = "finetuning_config.training_args.lerning_rate"
    space[1].update(min=20, max=4)
    space.append(
        {"key": "finetuning_config.training_args.weight_decay", "type": "double", "min": 0.0, "max": 0.1, "log": True}
    )
    space.append({"key": "finetuning_config.peft_conf.peft_kwargs.lora_alpha", "type": "int", "min": 0, "max": 8})
    spec["tune"]["objective"]["metric"] = "rewards/margins"
    spec["tune"]["algorithm"]["settings"] = {"n_startup": 2}
    message = spec_errors(spec)
    assert message.startswith("invalid experiment spec (6 problems):")
    assert (
        "tune.search_space[0].key: unknown key path: 'lerning_rate' is not a key of training_args "
        "(did you mean learning_rate?"
    ) in message
    assert "tune.search_space[1].min: is larger than max (4); swap them, got 20" in message
    assert "tune.search_space[3].min: must be above 0 on a log scale (log: true)" in message
    assert (
        "tune.search_space[4].min: the engine rejects finetuning_config.peft_conf.peft_kwargs.lora_alpha = 0: "
        "must be a number greater than 0"
    ) in message
    assert 'tune.objective.metric: a run with method: sft never writes this metric, got "rewards/margins"' in message
    assert "tune.algorithm.settings.n_startup: unknown setting for Optuna's TPESampler" in message


def test_an_empty_space_unknown_keys_and_a_metric_without_evaluation_fail(data_file):
    spec = make_spec(MODEL, str(data_file), search_space=[])
    assert "tune.search_space: is empty; add at least one parameter" in spec_errors(spec)

    spec = make_spec(MODEL, str(data_file), max_trials=3)
    assert "tune.max_trials: unknown key" in spec_errors(spec)

    spec = make_spec(MODEL, str(data_file))
    spec["finetuning_config"]["training_args"]["eval_strategy"] = "no"
    spec["finetuning_config"]["data_conf"]["validation_data"] = {"type": "NONE"}
    assert 'tune.objective.metric: is written only when the run evaluates, got "eval_loss"' in spec_errors(spec)

    spec = make_spec(MODEL, str(data_file), objective={"metric": "tokens_per_second", "direction": "maximize"})
    assert "tune.early_stopping.name: needs intermediate values" in spec_errors(spec)


def test_the_cli_prints_spec_errors_without_a_traceback(data_file, tmp_path, capsys):
    spec = make_spec(MODEL, str(data_file))
    spec["tune"]["search_space"][0]["key"] = "training_args.learning_rate"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["tune", str(path), "--dir", str(tmp_path / "exp")]) == 2
    error = capsys.readouterr().err
    assert "tune.search_space[0].key: must start with finetuning_config." in error
    assert "Traceback" not in error and not (tmp_path / "exp").exists()


def test_every_algorithm_and_pruner_builds_from_the_spec(data_file):
    import optuna

    from llmft.tune import study as studies

    pruners = ["median", "successive-halving", "hyperband", "none"]
    for algorithm in ("random", "grid", "tpe", "multivariate-tpe", "cmaes", "gp", "qmc"):
        settings = {"grid_points": 3} if algorithm == "grid" else {}
        pruner = {"name": pruners.pop() if pruners else "median"}
        spec = load_spec(
            make_spec(
                MODEL,
                str(data_file),
                early_stopping=pruner,
                algorithm={"name": algorithm, "seed": 1, "settings": settings},
            )
        )
        sampler, pruner = studies.sampler_and_pruner(spec)
        study = optuna.create_study(sampler=sampler, pruner=pruner)
        trial = study.ask()
        assert 1e-7 <= trial.suggest_float("learning_rate", 1e-7, 3e-2, log=True) <= 3e-2
    grid = load_spec(make_spec(MODEL, str(data_file), algorithm={"name": "grid", "settings": {"grid_points": 3}}))
    assert studies.sampler_and_pruner(grid)[0]._search_space["learning_rate"][0] == pytest.approx(1e-7)
    assert len(studies.sampler_and_pruner(grid)[0]._all_grids) == 3 * 15 * 2


# ------------------------------------------------------------------------------------------ experiments


def tune_process(spec_path: Path, experiment: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    log_path = experiment.parent / f"tuner-{experiment.name}-{time.time_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmft", "tune", str(spec_path), "--dir", str(experiment), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def succeeded(process: subprocess.Popen, timeout: float = 400) -> bool:
    """Wait for a tuner; when it fails, the failure shows its log."""
    code = process.wait(timeout=timeout)
    assert code == 0, f"llmft tune exited {code}:\n{process.log_path.read_text()[-6000:]}"  # type: ignore[attr-defined]
    return True


def trial_pids(experiment: Path) -> dict[int, int]:
    """The training processes of an experiment (their command line names the trial's config)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            for part in command:
                if part.startswith(str(experiment)) and part.endswith("/config.yaml"):
                    found[int(Path(part).parent.name.split("-")[1])] = int(proc.name)
    return found


def read_results(experiment: Path) -> dict:
    return json.loads((experiment / "experiment.json").read_text())


@pytest.mark.slow
def test_a_killed_tuner_and_trial_resume_and_the_study_ends_with_exactly_the_planned_trials(
    tiny_model_dir, data_file, tmp_path, capsys
):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(str(tiny_model_dir), str(data_file), max_steps=8)))
    experiment = tmp_path / "experiment"

    # Kill the tuner (SIGKILL: no cleanup) and one training process once a trial has saved a checkpoint.
    tuner = tune_process(spec_path, experiment)
    deadline = time.monotonic() + 240
    while not list(experiment.glob("trial-*/output/checkpoint-4")):
        assert tuner.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    victims = trial_pids(experiment)
    tuner.kill()
    tuner.wait()
    for pid in victims.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already ended by the tuner's death signal
    interrupted = {int(p.parent.parent.name.split("-")[1]) for p in experiment.glob("trial-*/output/checkpoint-*")}
    assert interrupted and read_results(experiment)["state"] == "running"

    # The same command again continues the same study.
    assert succeeded(tune_process(spec_path, experiment))
    results = read_results(experiment)
    trials = results["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and results["state"] == "completed"
    assert all(t["state"] in ("complete", "pruned") for t in trials)
    assert len(list(experiment.glob("trial-*"))) == 4
    for number in interrupted:
        log = (experiment / f"trial-{number}" / "train.log").read_text()
        assert "resuming from" in log, f"trial {number} started again from scratch"
        # One fresh start per trial: each attempt logs its batch plan once; every later one resumed.
        assert log.count("batch: total") - log.count("resuming from") == 1
        assert trials[number]["params"]  # the same values as before the crash (the config is unchanged)

    # The clearly worse trial (learning rate ~3e-6 against 2e-3..2e-2) was stopped early, its checkpoint kept.
    # (Which other trials the median stops depends on which ones completed first: that is timing, not asserted.)
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert any(t["params"]["learning_rate"] < 1e-4 for t in pruned)
    for trial in pruned:
        output = experiment / f"trial-{trial['number']}" / "output"
        assert trial["pruned_at"]["step"] < 8 and list(output.glob("checkpoint-*"))

    # The best trial's merged model loads and generates.
    best = results["best"]
    assert best is not None and trials[best]["value"] == min(t["value"] for t in trials if t["value"] is not None)
    final = Path(trials[best]["checkpoint_final"])
    assert final.is_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.generate(**tokenizer("Paris", return_tensors="pt"), max_new_tokens=2).shape[1] >= 2

    # status, best and report read the experiment.
    assert main(["tune", "status", str(experiment)]) == 0
    table = capsys.readouterr().out
    assert "experiment tiny-search: completed; 4 of 4 trials" in table
    assert "(best)" in table and "pruned at step" in table
    assert main(["tune", "best", str(experiment)]) == 0
    text = capsys.readouterr().out
    assert f"best trial of tiny-search: trial {best}" in text and f"servable model: {final}" in text
    assert main(["report", str(experiment), "--out", str(tmp_path / "report")]) == 0
    for name in ("history.png", "parallel.png", "intermediate.png", "report.md"):
        assert (tmp_path / "report" / name).stat().st_size > 1000 or name == "report.md"
    assert "| trial | state |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_two_workers_share_one_study_and_its_bucket_folder(tiny_model_dir, data_file, tmp_path, bucket, capsys):
    remote = f"{bucket}/experiments/shared"
    spec = make_spec(
        str(tiny_model_dir),
        str(data_file),
        name="two-workers",
        max_steps=4,
        max_trial_count=2,
        parallel_trial_count=2,
        early_stopping={"name": "none"},
    )
    spec["checkpointsRemote"] = remote
    spec["tune"]["storage"] = f"journal://{tmp_path / 'shared' / 'study.journal'}"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    # Two workers (as two pods of the Indexed Job would be), each with its own folder and one slot.
    workers = [
        tune_process(spec_path, tmp_path / f"worker-{index}", "--slots", "1", env={"JOB_COMPLETION_INDEX": str(index)})
        for index in (1, 0)
    ]
    for worker in workers:
        assert succeeded(worker)

    import optuna

    from llmft.tune.study import OWNER, open_storage

    study = optuna.load_study(study_name="two-workers", storage=open_storage(spec["tune"]["storage"]))
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert {t.system_attrs[OWNER] for t in trials} == {"0", "1"}
    assert len({t.params["learning_rate"] for t in trials}) == 2  # each worker samples its own values

    # Results from the bucket alone: the last worker to finish published both trials there.
    assert main(["tune", "status", remote]) == 0
    table = capsys.readouterr().out
    assert "experiment two-workers: completed; 2 of 2 trials (2 complete)" in table
    assert f"{remote}/trial-" in table and "/checkpoint-final" in table

    # The best trial's merged model is complete in the bucket, and the inference chart serves it as it is.
    from harness import CHARTS, render_valid

    from llmft.storage import list_objects, parse_location
    from llmft.tune.results import best_trial, load

    final = best_trial(load(remote))["checkpoint_final"]
    assert final.startswith(f"{remote}/trial-") and final.endswith("/checkpoint-final")
    files = set(list_objects(parse_location(final)))
    assert {"config.json", "model.safetensors", ".llmft-manifest.json"} <= files
    served = render_valid(CHARTS / "llm-inference-vllm", set_values=[f"model={final}"], release_name="best")
    assert final in json.dumps(served.documents)


def test_the_reference_is_generated_from_the_spec_models_and_its_example_is_valid():
    from harness import REPO

    from llmft.tune.reference import EXAMPLE, tune_reference

    assert (REPO / "docs" / "tune-reference.md").read_text() == tune_reference(), "run `make docs`"
    spec = load_spec(yaml.safe_load(EXAMPLE))
    assert spec.tune.early_stopping.settings == {"min_trials_required": 3, "start_step": 40}


def test_the_schema_holds_the_engine_config_and_rejects_unknown_keys(capsys):
    import jsonschema

    assert main(["tune", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    config = schema["properties"]["finetuning_config"]
    assert config["else"]["properties"]["method"]["const"] == "sft"
    assert config["then"]["properties"]["method"]["const"] == "dpo"
    good = yaml.safe_load(__import__("llmft.tune.reference", fromlist=["EXAMPLE"]).EXAMPLE)
    jsonschema.validate(good, schema)
    good["tune"]["max_trials"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(good, schema)


def test_the_study_holds_exactly_the_planned_trials_whoever_claims_them(data_file, tmp_path):
    from llmft.tune import study as studies

    spec_data = make_spec(MODEL, str(data_file), algorithm={"name": "grid", "settings": {"grid_points": 2}})
    spec = load_spec(spec_data)
    storage = studies.open_storage(studies.journal_url(tmp_path))
    study = studies.prepare(spec, storage, index=0)
    other = studies.prepare(spec, studies.open_storage(studies.journal_url(tmp_path)), index=1)
    claimed = [studies.claim(study if n % 2 else other, str(n % 2)) for n in range(4)]
    assert sorted(claimed) == [0, 1, 2, 3] and studies.claim(study, "0") is None
    assert studies.own_running(study, "1") == [claimed[1], claimed[3]]
    seen = set()
    for number in claimed:
        values = studies.suggest(study, number, spec)
        assert studies.suggest(other, number, spec) == values  # a resumed trial keeps its values
        seen.add(tuple(values.values()))
        studies.finish(study, number, "complete", value=float(number))  # the last one uses the grid up
    assert len(seen) == 4 and {t.state.name for t in study.get_trials()} == {"COMPLETE"}

    # A relaunch adds nothing; a larger budget tops up; a changed spec is refused.
    assert len(studies.prepare(spec, storage, index=0).get_trials()) == 4
    spec_data["tune"]["max_trial_count"] = 5
    assert len(studies.prepare(load_spec(spec_data), storage, index=0).get_trials()) == 5
    spec_data["tune"]["search_space"][1]["max"] = 32
    with pytest.raises(UserError, match="started from a different spec"):
        studies.prepare(load_spec(spec_data), storage, index=0)


def test_a_trial_being_claimed_is_nobodys_to_resume_and_finishing_it_twice_keeps_the_first_record(data_file, tmp_path):
    """Seen in CI: a worker looked for its own RUNNING trials between another's claim and its owner write."""
    from optuna.trial import TrialState

    from llmft.tune import study as studies

    spec = load_spec(make_spec(MODEL, str(data_file), max_trial_count=2))
    url = studies.journal_url(tmp_path)
    study = studies.prepare(spec, studies.open_storage(url), index=0)
    # Worker 0 half-way through its claim of trial 0: RUNNING, its name not written yet.
    study._storage.set_trial_state_values(studies.trial_id(study, 0), state=TrialState.RUNNING)
    other = studies.prepare(spec, studies.open_storage(url), index=1)
    assert studies.own_running(other, "1") == [] and studies.own_running(study, "0") == []
    assert studies.claim(other, "1") == 1 and studies.own_running(other, "1") == [1]

    # Were a trial run twice anyway, the second worker to finish it keeps the first record and does not crash.
    studies.finish(study, 1, "complete", value=0.5, attrs={"loss": 1.0})
    studies.finish(other, 1, "failed", attrs={"loss": 9.0})
    trial = study.get_trials()[1]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5 and trial.user_attrs["loss"] == 1.0


def test_a_trial_worse_than_the_median_stops_before_its_last_step_but_completes_at_it(data_file, tmp_path, monkeypatch):
    """The pruning callback on a real study: a completed trial at eval_loss 1.0, then a trial reporting 5.0."""
    import optuna
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from llmft.tune import study as studies
    from llmft.tune.pruning import PruningCallback
    from llmft.tune.spec import STORAGE_ENV
    from llmft.tune.trials import PRUNED_MARKER

    spec = load_spec(make_spec(MODEL, str(data_file), max_trial_count=2))
    url = studies.journal_url(tmp_path)
    monkeypatch.setenv(STORAGE_ENV, url)
    study = studies.prepare(spec, studies.open_storage(url), index=0)
    best, worse = studies.claim(study, "0"), studies.claim(study, "0")
    for step in (2, 4, 6):
        optuna.trial.Trial(study, studies.trial_id(study, best)).report(1.0, step)
    studies.finish(study, best, "complete", value=1.0)

    trial_file = tmp_path / "tune-trial.json"
    trial_file.write_text(
        json.dumps(
            {
                "study": spec.name,
                "trial_number": worse,
                "report": "eval_loss",
                "early_stopping": spec.tune.early_stopping.model_dump(),
            }
        )
    )

    def evaluate_at(step: int, output: Path) -> bool:
        control = TrainerControl()
        args = TrainingArguments(output_dir=str(output), report_to=[])
        state = TrainerState(global_step=step, max_steps=6)
        PruningCallback(trial_file).on_evaluate(args, state, control, metrics={"eval_loss": 5.0})
        return control.should_training_stop

    (tmp_path / "middle").mkdir()
    assert evaluate_at(4, tmp_path / "middle")  # worse than the median at step 4 (start_step 4): stopped
    assert json.loads((tmp_path / "middle" / PRUNED_MARKER).read_text())["step"] == 4
    (tmp_path / "last").mkdir()
    assert not evaluate_at(6, tmp_path / "last")  # still worse, but trained in full: it completes
    assert not (tmp_path / "last" / PRUNED_MARKER).exists()


# ------------------------------------------------------------------------------------------ the llm-tune chart


def test_the_chart_schema_is_generated_from_the_spec_model():
    from harness import REPO

    from llmft.tune.chart_files import values_schema

    committed = json.loads((REPO / "charts" / "llm-tune" / "values.schema.json").read_text())
    assert committed == values_schema(), "run `make chart-files`"


def test_the_chart_gives_its_workers_the_spec_llmft_tune_reads(capsys):
    from harness import CHARTS, OVERRIDES, render_chart

    override = OVERRIDES / "llm-tune" / "tiny-model.yaml"
    result = render_chart(CHARTS / "llm-tune", values_files=[override], release_name="tiny-search")
    config_map = next(d for d in result.documents if d["kind"] == "ConfigMap")
    spec = load_spec(yaml.safe_load(config_map["data"]["spec.yaml"]))
    assert spec == load_spec(
        {
            k: v
            for k, v in yaml.safe_load(override.read_text()).items()
            if k in ("name", "basemodel", "checkpointsRemote", "mergeAdapter", "finetuning_config", "tune")
        }
    )
    # The same values file locally: the chart's own keys are named as unused, the spec is checked.
    from llmft.commands.tune import _load

    assert _load(override, say_unused=True) == spec
    unused = "not used by a local run (the llm-tune chart's keys): studyStorage, downloadsReservedSize"
    assert unused in capsys.readouterr().out


def test_workers_share_a_study_through_the_storage_server(data_file, tmp_path):
    """The chart's study-storage server (`llmft tune storage-server`, Optuna's gRPC proxy) on loopback."""
    import socket

    from llmft.tune import study as studies

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmft",
            "tune",
            "storage-server",
            "--journal",
            str(tmp_path / "study.journal"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "the storage server did not start"
            time.sleep(0.3)
        spec = load_spec(make_spec(MODEL, str(data_file), max_trial_count=3))
        url = f"grpc://127.0.0.1:{port}"
        first = studies.prepare(spec, studies.open_storage(url), index=0)
        second = studies.prepare(spec, studies.open_storage(url), index=1)
        numbers = [studies.claim(first, "0"), studies.claim(second, "1"), studies.claim(second, "1")]
        assert sorted(numbers) == [0, 1, 2] and studies.claim(first, "0") is None
        studies.finish(second, numbers[1], "complete", value=1.5)
        assert first.get_trials()[numbers[1]].value == 1.5
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "study.journal").stat().st_size > 0


def test_failed_trials_count_and_too_many_fail_the_experiment(data_file, tmp_path, capsys):
    """Each value alone is valid, together the engine rejects them: every trial fails before it trains."""
    spec = make_spec(
        MODEL,
        str(data_file),
        max_failed_trial_count=1,
        search_space=[
            {"key": "finetuning_config.training_args.warmup_steps", "type": "int", "min": 1, "max": 3},
            {"key": "finetuning_config.training_args.warmup_ratio", "type": "categorical", "values": [0.1, 0.2]},
        ],
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = tmp_path / "experiment"
    assert main(["tune", str(path), "--dir", str(experiment)]) == 3  # the chart's podFailurePolicy fails the Job
    results = read_results(experiment)
    assert results["state"] == "failed"
    assert [t["state"] for t in results["trials"]] == ["fail", "fail", "waiting", "waiting"]
    assert "set either warmup_steps or warmup_ratio" in results["trials"][0]["error"]
    capsys.readouterr()
    assert main(["tune", "status", str(experiment)]) == 0
    assert "experiment tiny-search: failed; 4 of 4 trials (2 fail, 2 waiting)" in capsys.readouterr().out


def test_the_experiment_state_follows_failures_and_the_goal(data_file):
    from llmft.tune.results import experiment_state

    spec = load_spec(
        make_spec(
            MODEL,
            str(data_file),
            max_failed_trial_count=1,
            objective={"metric": "eval_loss", "direction": "minimize", "goal": 5.0},
        )
    )
    row = lambda state, value=None: {"state": state, "value": value}  # noqa: E731
    assert experiment_state([row("complete", 5.5), row("running"), row("waiting")], spec) == "running"
    assert experiment_state([row("complete", 4.9), row("waiting")], spec) == "goal-reached"
    assert experiment_state([row("fail"), row("fail"), row("waiting")], spec) == "failed"
    assert experiment_state([row("complete", 5.5), row("pruned"), row("fail")], spec) == "completed"


def test_several_gpus_per_trial_need_an_accelerate_config(data_file):
    spec = make_spec(MODEL, str(data_file), resources_per_trial={"gpus": 4})
    assert (
        "tune.resources_per_trial.gpus: more than one GPU per trial runs one process per GPU under accelerate, "
        "which needs finetuning_config.launch_conf.accelerate_config, got 4"
    ) in spec_errors(spec)
    spec["finetuning_config"]["launch_conf"] = {"accelerate_config": "/presets/auto-ddp/accelerate_config.yaml"}
    assert load_spec(spec).tune.resources_per_trial.gpus == 4


# ------------------------------------------------------------------------------ an evaluation per trial


def evaluated_spec(model: str, data: str, **tune) -> dict:
    """Trials judged by evaluating their final model: held-out loss the objective, exact match recorded."""
    settings = {
        "max_trial_count": 1,
        "parallel_trial_count": 1,
        "early_stopping": {"name": "none"},
        "objective": {
            "metric": "evaluation/loss",
            "direction": "minimize",
            "additional_metrics": ["evaluation/exact_match", "eval_loss"],
        },
        "evaluation": {
            "name": "facts",
            "data": {"path": data},
            "metrics": ["loss", "exact_match"],
            "generation": {"max_new_tokens": 4},
        },
    }
    return make_spec(model, data, name="evaluated", max_steps=4, **{**settings, **tune})


def test_evaluation_metrics_are_checked_against_the_experiments_evaluation(data_file):
    spec = make_spec(MODEL, str(data_file), objective={"metric": "evaluation/rouge_l", "direction": "maximize"})
    assert "tune.objective.metric: is an evaluation metric, but the experiment has no evaluation" in spec_errors(spec)

    spec = evaluated_spec(MODEL, str(data_file))
    spec["tune"]["objective"]["metric"] = "evaluation/rouge_l"
    assert 'tune.objective.metric: is not among the evaluation\'s metrics, got "evaluation/rouge_l"' in spec_errors(
        spec
    )

    spec = evaluated_spec(MODEL, str(data_file))
    spec["tune"]["evaluation"]["metrics"] = ["accuracy"]
    spec["tune"]["objective"]["additional_metrics"] = []
    assert "tune.evaluation.metrics[0]: not a metric of chat data" in spec_errors(spec)

    spec = evaluated_spec(MODEL, str(data_file), early_stopping={"name": "median"})
    assert "tune.early_stopping.name: needs intermediate values, but evaluation/loss is written once" in spec_errors(
        spec
    )


@pytest.mark.slow
def test_each_trial_is_judged_by_the_evaluation_of_its_final_model(tiny_model_dir, data_file, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(evaluated_spec(str(tiny_model_dir), str(data_file))))
    experiment = tmp_path / "experiment"
    assert main(["tune", str(path), "--dir", str(experiment)]) == 0

    results = read_results(experiment)
    assert [t["state"] for t in results["trials"]] == ["complete"]
    for trial in results["trials"]:
        folder = experiment / f"trial-{trial['number']}"
        evaluated = json.loads((folder / "output" / "eval" / "facts" / "results.json").read_text())
        assert evaluated["target"]["checkpoint"].endswith("checkpoint-final")
        assert trial["value"] == pytest.approx(evaluated["metrics"]["loss"])
        assert trial["metrics"]["evaluation/exact_match"] == pytest.approx(evaluated["metrics"]["exact_match"])
        assert "eval_loss" in trial["metrics"]  # the training's own metrics are still recorded
    assert results["best"] == 0
