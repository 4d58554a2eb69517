"""What makes a folder a tokenizer: the files transformers reads, and one error when none is there.

Without this check transformers falls back to guesses that mislead (a Hub download for a local path
that does not exist, advice to install sentencepiece for a folder with no tokenizer files at all).
"""

from __future__ import annotations

from pathlib import Path

from llmft.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "config.json",
)
# Any one of these is a tokenizer's vocabulary; config files alone are not.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_tokenizer_folder(folder: Path, what: str) -> None:
    """Raise UserError unless `folder` is a local folder holding a tokenizer's vocabulary."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"{what}: {folder} is not a folder (a local tokenizer is a model folder; for the bucket "
            "write bucket/path or s3://bucket/path)"
        )
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise UserError(
            f"{what}: {folder} has no tokenizer files (one of {', '.join(VOCABULARY_FILES)}); give "
            "the model folder that holds its tokenizer (download-model copies it with the weights)"
        )
