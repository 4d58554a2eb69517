# %% [markdown]
# # Fine-tune and tune from a notebook with `llmft.Client`
#
# The Kubeflow docs' two examples (the `train` API: a LoRA fine-tune on N workers x M processes with resources
# per worker; the `tune` API: learning rate, batch size, epochs, weight decay and LoRA rank, maximising an eval
# metric) redone with llmft's SDK. Each cell is plain Python: run the file (`python docs/tutorials/sdk_notebook.py`
# after `llmft tiny-model ./.demo/tiny-model`), paste the cells into Jupyter, or let
# tests/test_sdk_local.py run `main()` with tiny sizes. On this machine: one worker, the CPU, the tiny model.
# On a cluster: `Client("kubernetes", namespace=...)`, an `hf://` model, `nodes=4, gpus_per_node=2`.

# %%
from __future__ import annotations

import json
import os
import sys
import urllib.request

from llmft import Client, search
from llmft.finetune.config import BatchsizeConf, LoraKwargs, PeftConf, TrainingArgs

# %% [markdown]
# ## 1. The `train` example: LoRA, workers x processes, resources per worker
#
# Kubeflow's `num_workers=4, num_procs_per_worker=2, resources_per_worker={"gpu": 2, "cpu": 5, "memory": "10G"}`
# is `nodes=4, gpus_per_node=2, resources={"cpu": 5, "memory": "10G"}` here (the finetune chart's
# `finetuningNodes` x `finetuningGpus`). The LoRA settings are the engine's own models, so an IDE completes them
# and a wrong key fails before anything starts, with the message `llmft train` prints.


def fine_tune(client: Client, model: str, data: str, nodes: int = 1, gpus: int = 0, steps: int = 20) -> str:
    return client.train(
        model,  # hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0 on a cluster: the model initializer stages it
        [data],  # a local JSONL file: the dataset initializer validates and uploads it
        name="notebook-lora",
        validation=0.2,
        training_args=TrainingArgs(
            max_steps=steps, logging_steps=1, eval_strategy="steps", eval_steps=steps, save_steps=steps, report_to=[]
        ),
        peft_conf=PeftConf(peft_type="LORA", peft_kwargs=LoraKwargs(r=8, lora_alpha=8, lora_dropout=0.1, bias="none")),
        batchsize_conf=BatchsizeConf(total_train_batch_size=4, max_per_device_train_batch_size=4),
        nodes=nodes,
        gpus_per_node=gpus,
        resources={"cpu": 2, "memory": "4Gi"} if gpus == 0 else {"cpu": 5 * gpus, "memory": f"{10 * gpus}G"},
        merge=True,
    )


# %% [markdown]
# ## 2. Follow it: steps, logs, progress, metrics

# %%


def follow(client: Client, job: str) -> list[dict]:
    done = client.wait_for_job_status(job, timeout=900, polling_interval=2)
    for step in done.steps:
        print(f"{step.name}: {step.state}")
        for line in list(client.get_job_logs(job, step=step.name))[-3:]:
            print("   ", line)
    print("progress:", done.progress)
    return client.get_job_metrics(job)


# %% [markdown]
# ## 3. Serve the merged model and ask it something


def ask(client: Client, job: str, question: str) -> str:
    url = client.serve(model=job, name="notebook-chat")  # a train job's name means its checkpoint-final
    body = {"model": "notebook-chat", "messages": [{"role": "user", "content": question}], "max_tokens": 16}
    request = urllib.request.Request(
        url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]
    finally:
        client.delete_job("notebook-chat")


# %% [markdown]
# ## 4. The `tune` example: learning rate, batch size, epochs, weight decay, LoRA rank; maximise an eval metric
#
# Katib's `hp_space` becomes `search_space` over the engine's config keys; the objective is any metric the run
# writes (`eval_mean_token_accuracy` here, maximised). Trials are ordinary finetune runs; Optuna's TPE chooses.
# `num_train_epochs` counts only without `max_steps` (kept here so the tiny local run stays short).


def tune(client: Client, model: str, data: str, trials: int = 8, parallel: int = 2, steps: int = 20) -> str:
    return client.tune(
        model,
        [data],
        {
            "training_args.learning_rate": search.double(1e-5, 5e-3, log=True),
            "batchsize_conf.total_train_batch_size": search.categorical([4, 8]),
            "training_args.num_train_epochs": search.int(1, 3),
            "training_args.weight_decay": search.double(0.0, 0.1),
            "peft_conf.peft_kwargs.r": search.int(4, 8, step=4),
        },
        name="notebook-search",
        objective_metric="eval_mean_token_accuracy",
        direction="maximize",
        algorithm="tpe",
        seed=1,
        max_trial_count=trials,
        parallel_trial_count=parallel,
        validation=0.2,
        training_args=TrainingArgs(
            max_steps=steps, eval_strategy="steps", eval_steps=steps, save_steps=steps, report_to=[]
        ),
        batchsize_conf=BatchsizeConf(max_per_device_train_batch_size=4),
        merge=True,
    )


def main(client: Client, model: str, data: str, steps: int = 20, trials: int = 8) -> dict:
    job = fine_tune(client, model, data, steps=steps)
    rows = follow(client, job)
    print("last metrics row:", rows[-1])
    print("answer:", ask(client, job, "What is 2 plus 3?"))
    experiment = tune(client, model, data, trials=trials, steps=steps)
    client.wait_for_job_status(experiment, timeout=3600, polling_interval=5)
    best = client.get_best_results(experiment)
    print("best hyperparameters:", best.parameters, "objective:", best.objective, "serve:", best.checkpoint)
    return {"job": job, "metrics": rows, "best": best}


# %%
if __name__ == "__main__":
    # Local: the tiny model from `llmft tiny-model ./.demo/tiny-model`, a small JSONL of chats.
    model_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./.demo/tiny-model")
    data_file = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "./.demo/chats.jsonl")
    if not os.path.exists(data_file):
        with open(data_file, "w") as handle:
            for a in range(1, 9):
                for b in range(1, 9):
                    messages = [{"role": "user", "content": f"What is {a} plus {b}?"}]
                    messages.append({"role": "assistant", "content": f"{a} plus {b} is {a + b}."})
                    handle.write(json.dumps({"messages": messages}) + "\n")
    main(Client(), model_dir, data_file)
