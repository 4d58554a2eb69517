"""Staging: getting models and data into the bucket before training.

- `download_model`: stream a model from the Hub (`hf://org/name`), another bucket
  location or a local folder into the bucket, file by file, manifest last.
- `download_data` / `convert`: a Hub dataset (`hf://datasets/org/name[/path]`) into
  the bucket without a script, its files as they are (the model pipeline) or
  converted into one validated JSONL file.
- `validate` / `prepare_data`: check JSONL data sets line by line (SFT or DPO),
  summarise them, and upload the valid ones.
- `data_script`: run a user's data script that writes JSONL files.
"""
