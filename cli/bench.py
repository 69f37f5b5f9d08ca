"""The bench verbs of `kd` (bench, bench-check, bench-baseline): their options and how they run."""

from __future__ import annotations

import argparse
from pathlib import Path

from kd.config import choose_preset
from kd.runfolder import default_run_dir


def bench_options(p: argparse.ArgumentParser, verb: str) -> None:
    if verb in ("bench", "bench-baseline"):
        from bench.config import add_arguments

        add_arguments(p.add_argument, skip=("run_dir", "data"))  # those two every verb has
    if verb != "bench":
        p.add_argument("--baseline", type=Path,
                       help="baseline file (default: this CPU's bench/baselines/<preset>-<device>-<cpu>.json; "
                       "bench-check: else another CPU's, for accuracy only)")
    if verb == "bench-baseline":
        p.add_argument("--repeat", type=int, default=0,
                       help="bench this many times and keep the lowest of each figure (default: 0, use the "
                       "run's last bench)")
    if verb == "bench-check":
        from bench.records import GateConfig

        p.add_argument("--max-accuracy-drop", type=float,
                       help="points of accuracy or macro-F1 a row may lose (default: the baseline's gate section, "
                       f"else {GateConfig.max_accuracy_drop_pt})")
        p.add_argument("--max-ratio-drop", type=float,
                       help="share a within-run speed ratio may fall below the baseline's (default: the baseline's "
                       f"gate section, else {GateConfig.max_ratio_drop})")
        p.add_argument("--confirm", type=int, default=1,
                       help="when only speed ratios fail, bench again up to this many times; a ratio fails only "
                       "if it fails every time (default: %(default)s; 0: judge the last bench alone)")


def run_bench_verb(args) -> int:
    run_dir = args.run_dir or default_run_dir(Path(choose_preset(args.preset)).stem)
    if args.verb in ("bench", "bench-baseline"):
        from bench.baseline import record_baseline
        from bench.config import BenchConfig
        from bench.gate import read_summary
        from bench.run import bench, bench_summary

        cfg = BenchConfig.from_args(args, run_dir=run_dir, data=args.data)
        if args.verb == "bench":
            return bench(cfg)
        summaries = []
        for i in range(args.repeat):
            print(f"kd: bench {i + 1} of {args.repeat} for the baseline", flush=True)
            summaries.append(bench_summary(cfg, f"bench {i + 1} of {args.repeat}: no baseline written"))
        record_baseline(summaries or [read_summary(run_dir)], args.baseline)
        return 0
    from bench.gate import check

    overrides = {"max_accuracy_drop_pt": args.max_accuracy_drop, "max_ratio_drop": args.max_ratio_drop}
    return check(run_dir, args.baseline, overrides, args.confirm)
