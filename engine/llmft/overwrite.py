"""Refusing to write where it would destroy what the user has: one rule for every command that writes a folder."""

from __future__ import annotations

from pathlib import Path

from llmft.errors import UserError


def check_output_folder(
    path: Path, what: str, overwrite: bool = False, keep_out_of: dict[str, Path] | None = None
) -> None:
    """Raise UserError unless `path` may receive a new folder's files.

    Refused: `path` is a file; `path` is, or lies inside, one of the `keep_out_of` folders (named by
    their key: writing there overwrites an input); `path` is a non-empty folder and not `overwrite`.
    """
    target = Path(path).expanduser().resolve()
    for name, folder in (keep_out_of or {}).items():
        folder = Path(folder).expanduser().resolve()
        if target == folder or folder in target.parents:
            where = "is" if target == folder else "lies inside"
            raise UserError(
                f"{what}: {path} {where} the {name} folder {folder}; writing there would overwrite "
                "it: choose a new folder"
            )
    if target.is_file():
        raise UserError(f"{what}: {path} is a file; give the path of a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UserError(
            f"{what}: {path} is not empty; choose a new folder, or pass --overwrite to replace its contents"
        )
