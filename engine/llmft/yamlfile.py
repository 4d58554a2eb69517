"""Reading a YAML file the user wrote: the one place for its mistakes and their `file:line` messages.

PyYAML alone accepts a mapping that names a key twice (the last one silently wins) and reports
encoding errors as byte offsets. Every config, spec and values file the suite reads goes through
`read_yaml`, so each of these mistakes is one clear line naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmft.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping."""

    source = "<yaml>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges are PyYAML's own business
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, (list, dict)) and key in seen:
                    raise UserError(
                        f"{self.source}:{line}: the key {key!r} appears twice in one mapping (lines "
                        f"{seen[key]} and {line}); the second would silently replace the first: keep one"
                    )
                if not isinstance(key, (list, dict)):
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path, what: str) -> str:
    """The file's text; a missing file, a folder or bytes that are not UTF-8 are one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; give the file's path")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {raw[error.start]:#04x}); save the file as UTF-8"
        ) from None


def parse_yaml(text: str, source: str) -> Any:
    """Parse `text` (named `source` in messages) with duplicate keys refused."""
    loader = _UniqueKeyLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "file") -> Any:
    """The YAML document in `path`; every mistake in it is a UserError naming `file:line`."""
    return parse_yaml(read_text(Path(path), what), str(path))
