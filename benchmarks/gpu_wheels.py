"""`make gpu-wheels`: the wheels a bare GPU machine needs for `make gpu-check`, into .whl/ (at most 64 MiB).

    python -m benchmarks.gpu_wheels [--out .whl] [--python-version 3.11] [--limit-mib 64]

A GPU machine image has torch, transformers, accelerate and peft (and what they depend on). The
check also needs this package, trl and datasets (and boto3, this package's own dependency, which
the check itself never calls: it is left out, with a note, when it does not fit the limit):
the wheels of everything in their dependency closure that is not in the image's closure, at the
versions installed in this virtualenv (constraints.txt), for the GPU machine's Python
(`--python-version`, default this one's; manylinux x86_64 binaries). On the GPU machine:
`pip install --no-deps .whl/*.whl`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
ON_THE_GPU_IMAGE = ("torch", "transformers", "accelerate", "peft")
NEEDED = ("trl", "datasets")
OPTIONAL = ("boto3",)  # a dependency of this package that the GPU check does not call
MIB = 1024 * 1024


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(roots: tuple[str, ...] | list[str]) -> set[str]:
    """Installed distributions reachable from `roots` through their (unconditional, marker-true) requirements."""
    seen: set[str] = set()
    todo = [_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_name(requirement.name))
    return seen


def wanted(optional: bool = True) -> dict[str, str]:
    """Distribution -> installed version: what the check needs beyond the GPU image (this package left out)."""
    core = [Requirement(text).name for text in metadata.requires("llmft") or [] if "extra ==" not in text]
    roots = [*NEEDED, *core] if optional else [*NEEDED, *(name for name in core if name not in OPTIONAL)]
    missing = closure(roots) - closure(ON_THE_GPU_IMAGE) - {"llmft"}
    return {name: metadata.version(name) for name in sorted(missing)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / ".whl"))
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument("--limit-mib", type=float, default=64)
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), str(REPO)], check=True)
    versions = wanted()
    subprocess.run(
        [
            *pip,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            args.python_version,
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "any",
            "-d",
            str(out),
            *[f"{name}=={version}" for name, version in versions.items()],
        ],
        check=True,
    )
    wheels = sorted(out.glob("*.whl"), key=lambda path: path.stat().st_size, reverse=True)
    total = sum(path.stat().st_size for path in wheels)
    if total > args.limit_mib * MIB:
        left_out = set(versions) - set(wanted(optional=False))
        for path in wheels:
            if _name(path.name.split("-")[0]) in left_out:
                path.unlink()
        print(
            f"note: {', '.join(sorted(left_out))} left out to fit {args.limit_mib:.0f} MiB (the GPU check does not "
            "use the bucket)"
        )
        wheels = sorted(out.glob("*.whl"), key=lambda path: path.stat().st_size, reverse=True)
        total = sum(path.stat().st_size for path in wheels)
    print(
        f"{len(wheels)} wheels, {total / MIB:.1f} MiB in {out} (Python {args.python_version}): "
        + ", ".join(f"{path.name.split('-')[0]} {path.stat().st_size / MIB:.1f}" for path in wheels[:6])
        + ", ..."
    )
    if total > args.limit_mib * MIB:
        print(
            f"error: {total / MIB:.1f} MiB is over the {args.limit_mib:.0f} MiB a device run carries; the largest "
            "are listed above",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
