"""README's Performance table from benchmarks/results/latest.json (`make bench` runs this after the benchmarks).

    python -m benchmarks.readme [--results benchmarks/results/latest.json] [--readme README.md]

Rewrites only the lines between the two markers in README.md: the "Latest run" sentence and the
table of figures (the rows are `benchmarks.run.markdown`'s, so latest.md and the README agree).
The prose around them (how each figure is measured, what limits a missed target) is written by
hand from the same results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.run import HERE, markdown

BEGIN = "<!-- benchmarks:begin (written by `make bench-readme` from benchmarks/results/latest.json) -->"
END = "<!-- benchmarks:end -->"


def block(report: dict) -> str:
    machine = report["machine"]
    load = machine["load_average_1min"]
    minutes = sum(outcome.get("wall_seconds", 0) for outcome in report["results"].values()) / 60
    table = [line for line in markdown(report).splitlines() if line.startswith("|")]
    return "\n".join(
        [
            f"Latest run ({report['date']}, {machine['cpus']} CPU cores ({machine['processor']}), no GPU, "
            f"1-minute load average {load['start']} at the start and {load['end']} at the end; `make bench` took about "
            f"{minutes:.1f} minutes" + ("; QUICK MODE, numbers mean nothing" if report["quick"] else "") + "):",
            "",
            *table,
        ]
    )


def rewrite(readme: str, report: dict) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {BEGIN!r} and {END!r} around the Performance table")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block(report)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--readme", default=str(HERE.parent / "README.md"))
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    readme.write_text(rewrite(readme.read_text(), json.loads(Path(args.results).read_text())))
    print(f"{readme}: Performance table rewritten from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
