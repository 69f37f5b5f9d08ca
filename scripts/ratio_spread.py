"""How far each within-run speed ratio that bench-check gates moves between repeated benches of one run folder.

    python scripts/ratio_spread.py new=/tmp/b1,/tmp/b2,/tmp/b3 old=/tmp/o1,/tmp/o2,/tmp/o3

Each group is a label and the bench folders (or summary.json files) of repeated benches; for every ratio the
groups share, it prints the spread (max / min over the group's benches) per group as a markdown table, then
the median and largest spread per group and kind, and for how many ratios the first group's spread is no
wider than the second's. docs/bench.md's spread table comes from it. It reads the
summaries' `ratios` lists as they are, so benches written by earlier versions of kd can be compared too."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def ratios_of(path: Path) -> dict[tuple[str, str, str], float]:
    summary = path / "summary.json" if path.is_dir() else path
    stored = json.loads(summary.read_text())["ratios"]
    return {(r["fast"], r["slow"], r["what"]): r["value"] for r in stored}


def main(args: list[str]) -> int:
    if not args or any("=" not in a for a in args):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    groups = {}
    for arg in args:
        label, paths = arg.split("=", 1)
        groups[label] = [ratios_of(Path(p)) for p in paths.split(",")]
    keys = sorted(set.intersection(*(set(r) for runs in groups.values() for r in runs)),
                  key=lambda k: (k[2], k[1], k[0]))
    spread = {label: {k: max(r[k] for r in runs) / min(r[k] for r in runs) for k in keys}
              for label, runs in groups.items()}
    print("| ratio | " + " | ".join(f"{label}: values | {label}: max/min" for label in groups) + " |")
    print("|---|" + "---|---|" * len(groups))
    for k in keys:
        cells = [f"{' '.join(f'{r[k]:.2f}' for r in runs)} | {spread[label][k]:.3f}" for label, runs in groups.items()]
        print(f"| {k[0]} / {k[1]} ({k[2]}) | " + " | ".join(cells) + " |")
    print()
    labels = list(groups)
    versus = f" | {labels[0]} no wider than {labels[1]}" if len(labels) > 1 else ""
    print("| kind | ratios | " + " | ".join(f"{label}: median max/min | {label}: largest" for label in labels)
          + versus + " |")
    print("|---|---|" + "---|---|" * len(labels) + ("---|" if versus else ""))
    for kind in sorted({k[2] for k in keys}) + ["all"]:
        chosen = [k for k in keys if kind in ("all", k[2])]
        cells = [f"{statistics.median(spread[label][k] for k in chosen):.3f} | "
                 f"{max(spread[label][k] for k in chosen):.3f}" for label in labels]
        if versus:
            narrower = sum(spread[labels[0]][k] <= spread[labels[1]][k] for k in chosen)
            cells.append(f"{narrower} of {len(chosen)}")
        print(f"| {kind} | {len(chosen)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
