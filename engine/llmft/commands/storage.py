"""`llmft storage cp|ls`: the bucket client that charts and users call (never `mc`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "storage",
        help="copy and list files between local paths and the bucket",
        description="Locations: s3://bucket/key, bucket/key, or a local path starting with /, ./ or ../",
    )
    actions = parser.add_subparsers(dest="storage_command", metavar="ACTION", required=True)

    cp = actions.add_parser("cp", help="copy a file or a whole tree (trees get a manifest, written last)")
    cp.add_argument("source")
    cp.add_argument("destination")
    cp.add_argument("--overwrite", action="store_true", help="replace a different file already at the destination")
    cp.set_defaults(func=_cp)

    ls = actions.add_parser("ls", help="list a bucket prefix; folders show whether they are complete")
    ls.add_argument("location")
    ls.add_argument("--recursive", "-r", action="store_true", help="list every object under the prefix")
    ls.set_defaults(func=_ls)


def _cp(args: argparse.Namespace) -> int:
    from llmft.storage import copy

    report = copy(args.source, args.destination, overwrite=args.overwrite)
    print(f"copied {len(report.transferred)} file(s), skipped {len(report.skipped)} unchanged")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.progress import human_bytes
    from llmft.run_layout import MANIFEST_NAME, RUN_COMPLETE_MARKER
    from llmft.storage import list_objects, parse_location

    location = parse_location(args.location)
    if location.is_local:
        raise UserError(f"{args.location} is a local path; `llmft storage ls` lists bucket locations")
    objects = list_objects(location)
    if not objects:
        from llmft.storage.transfer import head_object

        single = head_object(location) if location.key else None
        if single is None:
            raise UserError(f"nothing at {location}")
        print(f"{human_bytes(int(single['ContentLength'])):>10}  {location.name}")
        return 0
    if args.recursive:
        for relative, size in sorted(objects.items()):
            print(f"{human_bytes(size):>10}  {relative}")
        return 0
    folders: dict[str, list[str]] = {}
    for relative, size in sorted(objects.items()):
        head, sep, rest = relative.partition("/")
        if sep:
            folders.setdefault(head, []).append(rest)
        elif relative == MANIFEST_NAME:
            continue
        else:
            print(f"{human_bytes(size):>10}  {relative}")
    for folder, children in folders.items():
        if MANIFEST_NAME in children:
            state = "complete"
        elif any("/" in child for child in children):
            state = "folders"  # e.g. a run folder or a prefix holding several trees
        else:
            state = "incomplete (no manifest)"
        print(f"{'DIR':>10}  {folder}/  [{state}]")
    if MANIFEST_NAME in objects:
        print(f"this folder is complete ({MANIFEST_NAME} present)")
    elif RUN_COMPLETE_MARKER in objects:
        print(f"this fine-tuning run is complete ({RUN_COMPLETE_MARKER} present)")
    elif any("/" not in r for r in objects) and not folders:
        print("this folder has no manifest: incomplete or not uploaded as a tree")
    return 0
