"""Hyperparameter optimisation (`llmft tune SPEC`): an Optuna study whose trials are ordinary finetune runs.

- `spec`: the experiment spec (pydantic, every problem at once with its key path) and its JSON Schema.
- `keypath`: config keys by path (`finetuning_config.peft_conf.peft_kwargs.r`): parse, check, read, set.
- `metrics`: which metrics a method writes, and reading a finished trial's objective.
- `algorithms`: the spec's algorithm and early stopping as Optuna samplers and pruners.
- `study`: the study storage, the fixed set of trials, claiming and finishing trials.
- `trials`: one trial's folder, config and training process.
- `pruning`: the TrainerCallback a trial's training process attaches (report, stop when pruned).
- `worker`: the loop that runs trials, at most `slots` at a time.
- `results`: the experiment's trials as a table (status, best) and experiment.json.
- `plots`: the experiment report (optimisation history, importance, curves).
- `reference`: docs/tune-reference.md from the spec models.
"""
