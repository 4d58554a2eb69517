"""Staging: getting models and data into the bucket before training.

- `download_model`: stream a model from the Hub (`hf://org/name`), another bucket
  location or a local folder into the bucket, file by file, manifest last.
- `validate` / `prepare_data`: check JSONL data sets line by line (SFT or DPO),
  summarise them, and upload the valid ones.
- `data_script`: run a user's data script that writes JSONL files.
"""
