"""`llmft.Client`: fine-tune, tune and serve from Python over the same charts and engine as the CLI.

```python
from llmft import Client
from llmft.finetune.config import TrainingArgs, PeftConf, LoraKwargs

client = Client()                                   # local runner + embedded S3; or Client("kubernetes")
job = client.train(model="hf://org/name", datasets=["default-bucket/datasets/train.jsonl"],
                   training_args=TrainingArgs(max_steps=100), peft_conf=PeftConf(peft_type="LORA"))
client.wait_for_job_status(job)
```

Every call checks its arguments first (the engine's models and messages, then the charts' render-time
checks) and only then starts or applies anything. See docs/sdk.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from llmft.errors import UserError
from llmft.sdk import jobs as J
from llmft.sdk.errors import JobFailed, JobNotFound, JobTimeout
from llmft.sdk.plan import DataScript, Resources, charts_root, plan_serve, plan_train, plan_tune, render

BACKENDS = ("local", "kubernetes")


class Client:
    """A backend chosen at construction: `local` (default) or `kubernetes`.

    - `local`: charts run through the local runner (`llmft local`), bucket = BUCKET_STORAGE_HOST or the
      embedded S3 server; jobs live under `$LLMFT_STATE_DIR/sdk/jobs/` (`state_dir` to choose).
    - `kubernetes`: the official client; kubeconfig's current context (`config_file`, `context` to choose) or
      the in-cluster config; `namespace` (default: the context's, else `default`). `values` are merged into
      every chart's values (bucketStorageHost, bucketCredentialsSecret, image, ...).
    """

    def __init__(
        self,
        backend: str = "local",
        *,
        namespace: str | None = None,
        bucket: str = "default-bucket",
        values: dict | None = None,
        charts_dir: str | None = None,
        state_dir: str | None = None,
        config_file: str | None = None,
        context: str | None = None,
    ):
        if backend not in BACKENDS:
            raise UserError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise UserError(f"bucket: a bucket name (default-bucket), got {bucket!r}")
        self.bucket = bucket
        self.values = dict(values or {})
        self.charts = charts_root(charts_dir)
        self._backend: Any
        if backend == "local":
            from llmft.sdk.local_backend import LocalBackend

            self._backend = LocalBackend(state_dir)
            self.namespace = namespace or "default"
        else:
            from llmft.sdk.kubernetes_backend import KubernetesBackend

            self._backend = KubernetesBackend(namespace=namespace, config_file=config_file, context=context)
            self.namespace = self._backend.namespace
        self.backend = backend

    @property
    def _local(self) -> bool:
        return self.backend == "local"

    # ------------------------------------------------------------------------------------------ train

    def train(
        self,
        model: str,
        datasets: Sequence[Any] | str,
        *,
        name: str | None = None,
        method: str = "sft",
        validation: Any = None,
        training_args: Any = None,
        peft_conf: Any = None,
        batchsize_conf: Any = None,
        sft_args: Any = None,
        dpo_args: Any = None,
        data_conf: Any = None,
        run_conf: Any = None,
        config: dict | None = None,
        nodes: int = 1,
        gpus_per_node: int = 0,
        resources: Resources | dict | None = None,
        distributed_type: str | None = None,
        checkpoints_remote: str | None = None,
        merge: bool = False,
        values: dict | None = None,
    ) -> str:
        """Stage what is not in the bucket yet, then fine-tune; returns the job name at once.

        - `model`: `hf://org/name`, a bucket folder (`bucket/path`) or a local folder (`./path`; local backend).
        - `datasets`: bucket JSONL locations, local JSONL files, `DatasetSpec`s or `DataScript`s.
        - `validation`: a fraction (0.1), datasets as above, or a `ValidationData`.
        - the config as the engine's models (`llmft.finetune.config`: `TrainingArgs`, `PeftConf`,
          `BatchsizeConf`, `SftArgs`, `DataConf` keys such as `chat_template_name` as a dict; `dpo_args` with
          `method="dpo"`), plus `config` for any other `finetuning_config` keys. Default: LoRA.
        - `nodes` x `gpus_per_node` processes (0 GPUs: one CPU process), `resources` per node.
        - `checkpoints_remote`: default `<bucket>/experiments/<name>`; `merge`: write a merged model to serve.
        - `values`: more llm-finetune chart values.
        """
        name = name or f"{method}-{uuid.uuid4().hex[:8]}"
        sections = _sections(training_args, peft_conf, batchsize_conf, sft_args, dpo_args, data_conf, run_conf)
        plan = plan_train(
            name=name,
            model=model,
            datasets=datasets,
            method=method,
            validation=validation,
            sections=sections,
            config=config,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            resources=resources,
            distributed_type=distributed_type,
            checkpoints_remote=checkpoints_remote,
            merge=merge,
            values=values,
            bucket=self.bucket,
            local_backend=self._local,
        )
        return self._submit(plan)

    # ------------------------------------------------------------------------------------------ tune

    def tune(
        self,
        model: str,
        datasets: Sequence[Any] | str,
        search_space: dict,
        *,
        name: str | None = None,
        objective_metric: str = "eval_loss",
        direction: str = "minimize",
        additional_metrics: Sequence[str] = (),
        algorithm: str = "tpe",
        algorithm_settings: dict | None = None,
        seed: int | None = None,
        early_stopping: str = "none",
        early_stopping_settings: dict | None = None,
        max_trial_count: int = 12,
        parallel_trial_count: int = 1,
        max_failed_trial_count: int = 3,
        resources_per_trial: dict | None = None,
        method: str = "sft",
        validation: Any = None,
        training_args: Any = None,
        peft_conf: Any = None,
        batchsize_conf: Any = None,
        sft_args: Any = None,
        dpo_args: Any = None,
        data_conf: Any = None,
        run_conf: Any = None,
        config: dict | None = None,
        checkpoints_remote: str | None = None,
        merge: bool = False,
        values: dict | None = None,
    ) -> str:
        """A hyperparameter search (`llmft tune`'s experiment spec, docs/hpo.md); returns the experiment name.

        `search_space` maps config key paths (`training_args.learning_rate`, `peft_conf.peft_kwargs.r`; the
        `finetuning_config.` prefix is optional) to `search.double/int/categorical`. Locally the experiment
        runs as `llmft tune`; on a cluster as the llm-tune chart. Model and data are staged as in `train`.
        """
        name = name or f"tune-{uuid.uuid4().hex[:8]}"
        sections = _sections(training_args, peft_conf, batchsize_conf, sft_args, dpo_args, data_conf, run_conf)
        plan = plan_tune(
            name=name,
            model=model,
            datasets=datasets,
            method=method,
            validation=validation,
            sections=sections,
            config=config,
            search_space=search_space,
            objective_metric=objective_metric,
            direction=direction,
            algorithm=algorithm,
            algorithm_settings=algorithm_settings,
            seed=seed,
            early_stopping=early_stopping,
            early_stopping_settings=early_stopping_settings,
            max_trial_count=max_trial_count,
            parallel_trial_count=parallel_trial_count,
            max_failed_trial_count=max_failed_trial_count,
            additional_metrics=additional_metrics,
            resources_per_trial=resources_per_trial,
            checkpoints_remote=checkpoints_remote,
            merge=merge,
            values=values,
            bucket=self.bucket,
            local_backend=self._local,
        )
        return self._submit(plan)

    optimize = tune  # the Kubeflow OptimizerClient's verb

    def _submit(self, plan) -> str:
        """Render every step of a new job with the real Helm engine, then hand it to the backend."""
        self._check_new(plan.name)
        render(plan, self.charts, self.namespace, self.values)
        self._backend.submit(plan, self.charts)
        return plan.name

    def get_best_results(self, name: str) -> J.BestResult:
        """The best trial: its parameters, objective value, metrics and servable checkpoint."""
        from llmft.tune import results

        job = self.get_job(name)
        if job.kind != "tune" or not job.checkpoints_remote:
            raise UserError(f"{name} is a {job.kind} job, not a tune experiment")
        with self._bucket():
            data = results.load(job.checkpoints_remote)
        row = results.best_trial(data)
        objective = dict(data["objective"])
        objective["value"] = row["value"]
        return J.BestResult(
            trial=row["number"],
            parameters=dict(row["params"]),
            objective=objective,
            metrics=dict(row.get("metrics") or {}),
            checkpoint=row.get("checkpoint_final"),
            adapter=row.get("adapter"),
        )

    def get_optimal_hyperparameters(self, name: str) -> dict[str, Any]:
        """The best trial's parameter values by name."""
        return self.get_best_results(name).parameters

    # ------------------------------------------------------------------------------------------ serve

    def serve(
        self,
        model: str,
        name: str,
        *,
        adapters: dict | None = None,
        values: dict | None = None,
        port: int | None = None,
        timeout: float = 300,
    ) -> str:
        """Deploy the inference chart for `model` (a bucket checkpoint, or a train job's name: its
        checkpoint-final) and return the OpenAI base URL. Locally the runner's CPU server on `port` (default:
        a free one), ready when this returns; on a cluster the Service's in-cluster URL."""
        model = self._servable(model)
        plan = plan_serve(name=name, model=model, values=values, adapters=adapters)
        self._check_new(name)
        if self._local:
            from llmft.storage.seaweed import free_ports

            plan.port = port or free_ports(1)[0]
        render(plan, self.charts, self.namespace, self.values)
        self._backend.submit(plan, self.charts)
        if not self._local:
            return self._backend.service_url(name)
        url = f"http://127.0.0.1:{plan.port}"
        self._wait_ready(name, url, timeout)
        return url + "/v1"

    def _servable(self, model: str) -> str:
        """A train job's name stands for its checkpoint-final."""
        import re

        if isinstance(model, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", model):
            try:
                job = self.get_job(model)
            except UserError:
                return model
            if job.kind == "train" and job.checkpoints_remote:
                return f"{job.checkpoints_remote.rstrip('/')}/checkpoint-final"
        return model

    def _wait_ready(self, name: str, url: str, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get_job(name)
            if job.state in (J.FAILED, J.COMPLETE):
                raise self._failure(job, "server")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise JobTimeout(f"server {name} did not answer {url}/health within {timeout:.0f} s; get_job_logs({name!r})")

    # ------------------------------------------------------------------------------------------ jobs

    def list_jobs(self) -> list[J.Job]:
        """Every job of this backend (train, tune and serve), oldest first."""
        return sorted(self._backend.list_jobs(), key=lambda job: job.created or 0)

    def get_job(self, name: str) -> J.Job:
        """The job with its steps' states and, for training, progress from metrics.jsonl."""
        return self._backend.get(name)

    def get_job_logs(self, name: str, step: str | None = None, follow: bool = False) -> Iterator[str]:
        """The log lines of one step (default: the last: the training node, tuner or server); `follow`
        streams them until the step ends. Steps: `model-initializer`, `dataset-initializer`, `node-0`, ..."""
        names = self._backend.step_names(name)
        chosen = step or names[-1]
        if chosen not in names:
            raise UserError(f"job {name} has no step {chosen!r}; its steps: {', '.join(names)}")
        return self._backend.logs(name, chosen, follow)

    def wait_for_job_status(
        self, name: str, status: str | Sequence[str] = J.COMPLETE, timeout: float = 600, polling_interval: float = 2
    ) -> J.Job:
        """Wait until the job reaches `status` (Created, Running, Complete, Failed); a job that fails first
        raises JobFailed with the reason and the failed step's last log lines; JobTimeout after `timeout`."""
        wanted = {status} if isinstance(status, str) else set(status)
        unknown = wanted - set(J.JOB_STATES)
        if unknown:
            raise UserError(f"status: one of {', '.join(J.JOB_STATES)}, got {', '.join(sorted(unknown))}")
        if timeout <= 0 or polling_interval <= 0:
            raise UserError("timeout and polling_interval: positive numbers of seconds")
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if job.state in wanted:
                return job
            if job.state == J.FAILED:
                raise self._failure(job)
            if job.state == J.COMPLETE:
                raise UserError(f"job {name} is Complete and will never be {'/'.join(sorted(wanted))}")
            if time.monotonic() >= deadline:
                running = ", ".join(f"{s.name} {s.state}" for s in job.steps)
                raise JobTimeout(f"job {name} is still {job.state} after {timeout:.0f} s ({running})")
            time.sleep(min(polling_interval, max(deadline - time.monotonic(), 0.05)))

    def _failure(self, job: J.Job, default_step: str | None = None) -> JobFailed:
        step = next((s for s in job.steps if s.state == J.FAILED), None)
        step_name = step.name if step else (default_step or job.steps[-1].name)
        try:
            lines = list(self._backend.logs(job.name, step_name, False))[-20:]
        except UserError:
            lines = []
        reason = job.reason or (step.reason if step else "ended")
        text = "\n  ".join(lines) if lines else "(no log lines)"
        return JobFailed(f"job {job.name} failed: {reason}; last lines of {step_name}:\n  {text}", reason, lines)

    def delete_job(self, name: str) -> None:
        """Stop the job's processes or delete its Kubernetes objects (its bucket outputs stay)."""
        self._backend.delete(name)

    def get_job_metrics(self, name: str) -> list[dict]:
        """The run's metrics.jsonl rows from the bucket (step, loss, eval_loss, learning_rate, ...)."""
        job = self._backend.get(name, with_progress=False)
        if not job.checkpoints_remote:
            return []
        from llmft.sdk.metrics import read_metrics

        with self._bucket():
            return read_metrics(job.checkpoints_remote)

    # ------------------------------------------------------------------------------------------ helpers

    def _bucket(self):
        import contextlib

        return self._backend.bucket() if self._local else contextlib.nullcontext()

    def _check_new(self, name: str) -> None:
        try:
            self._backend.get(name, with_progress=False)
        except JobNotFound:
            return
        raise UserError(
            f"a job named {name} exists already: delete it first (delete_job({name!r})) or choose another name"
        )


__all__ = ["Client", "DataScript", "Resources"]


def _sections(training_args, peft_conf, batchsize_conf, sft_args, dpo_args, data_conf, run_conf) -> dict[str, Any]:
    """The finetune config's sections as the caller gave them (LoRA unless `peft_conf` says otherwise)."""
    return {
        "training_args": training_args,
        "peft_conf": peft_conf if peft_conf is not None else {"peft_type": "LORA"},
        "batchsize_conf": batchsize_conf,
        "sft_args": sft_args,
        "dpo_args": dpo_args,
        "data_conf": data_conf,
        "run_conf": run_conf,
    }
