"""The `kd` command: one verb per pipeline stage, each taking --preset, --data, --run-dir and --set. Building the
parser imports the settings' dataclasses and nothing heavier; a verb imports its stage when it runs."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from cli.bench import bench_options, run_bench_verb
from export.config import ExportConfig
from kd.config import available_presets, choose_preset, load_config
from kd.errors import KdError, say_error
from kd.runfolder import default_run_dir

VERBS = {
    "train-all": "evaluate or fine-tune the teacher, train baseline and distilled students, write the report",
    "eval-teacher": "evaluate an already-trained teacher on test (no fine-tuning) and save it into the run",
    "train-teacher": "fine-tune the teacher when it needs it (teacher.finetune), evaluate it, save it",
    "train-baseline": "train the baseline student on hard labels only",
    "distill": "train the distilled student on cached teacher logits mixed with hard labels",
    "report": "write results.json, results.md and the plots from the run's models",
    "teacher-logits": "write a teacher's logits over the students' train rows to a file (csv, jsonl, parquet) that "
                      "methods with teacher: file read back (--teacher-logits)",
    "bench-train": "time one training epoch: baseline vs distillation (cached logits) vs the teacher run online",
    "study": "runs over label budget x seed x student depth: means and confidence intervals, paired tests, plots",
}
EXPORT_VERBS = {
    "export": "write fp32 and int8 ONNX and OpenVINO IRs for the run's models into <run>/onnx/, each checked "
              "against PyTorch",
    "export-check": "classify the test split with each export (plain InferenceSession; OpenVINO) and compare with "
                    "PyTorch",
    "predict": "label and probability per text, from a PyTorch folder, an ONNX or OpenVINO folder or file",
}
# the preset sections that other packages read, checked when a preset loads
SECTIONS = {"export": ExportConfig}
BENCH_VERBS = {
    "bench": "pytest-benchmark suite: accuracy, F1, size, latency, throughput of every model x backend x device",
    "bench-check": "compare the run's bench summary with a committed baseline; exit 1 on a regression",
    "bench-baseline": "record the run's bench summary as the baseline bench-check compares with",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kd", description="Distil a BERT teacher into a DistilBERT student.")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, summary in {**VERBS, **EXPORT_VERBS, **BENCH_VERBS}.items():
        p = verbs.add_parser(verb, help=summary, description=summary)
        if verb == "predict":
            p.add_argument("texts", nargs="*", help="texts to classify (or --file)")
            p.add_argument("--model", type=Path, required=True,
                           help="a save_pretrained folder (PyTorch), an export folder (its model.onnx), an "
                           ".onnx file such as <run>/onnx/distilled/model_int8.onnx, or an OpenVINO folder such as "
                           "<run>/onnx/distilled/openvino_int8")
            p.add_argument("--file", type=Path, help="a UTF-8 file with one text per line")
            p.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
            p.add_argument("--batch-size", type=int, default=32)
            p.add_argument("--allow-pickle", action="store_true", help="allow pytorch_model.bin weights")
            continue
        if verb == "study":
            from kd.study import available_studies

            p.add_argument("study", help=f"one of {available_studies()} or a study YAML file (kd/studies/)")
            p.add_argument("--data", help="data folder or hub dataset id, taken as written, for every cell (default: "
                           "as for a run)")
            p.add_argument("--run-dir", type=Path, help="study folder (default: runs/<study>)")
            p.add_argument("--report", action="store_true", help="only merge the finished cells' records into "
                           "study.json and rebuild study.md and the plots (after --shard runs, for example)")
            p.add_argument("--executor", choices=("local", "ray"), default="local",
                           help="local: cell after cell in this process (default); ray: each cell a Ray task")
            p.add_argument("--address", help="with --executor ray: the Ray head (HOST:PORT, 'auto' or "
                           "ray://HOST:PORT; default: a Ray started on this machine)")
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="a run-config setting for every cell, added to the study's `set` (repeatable)")
            p.add_argument("--plan", action="store_true", help="print the seeds each primary comparison needs, "
                           "from a finished pilot study (--pilot, default: --run-dir); runs nothing")
            p.add_argument("--pilot", type=Path, help="with --plan: the finished study folder to read")
            p.add_argument("--precision", type=float, help="with --plan: the interval half-width in points "
                           "(default: the study's precision, else 1.5)")
            p.add_argument("--effect", type=float, help="with --plan: the difference in points to detect "
                           "(default: the pilot's)")
            p.add_argument("--shard", metavar="I/N", help="run only shard I of N of the grid (cells sharing a "
                           "teacher stay together), e.g. a Slurm array task; then --report merges")
            continue
        p.add_argument("--preset", help=f"one of {available_presets()} or a YAML file "
                       "(default: full with CUDA/MPS, else cpu)")
        p.add_argument("--data", help="data folder (train/test .csv/.jsonl/.parquet) or hub dataset id, taken as "
                       "written (default: the preset's data.source, else $KD_DATA, data/ag_news/, then AG News "
                       "from the hub)")
        p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset>)")
        if verb in BENCH_VERBS:
            bench_options(p, verb)
            continue
        if verb == "export":
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override an export setting (export/config.py), e.g. --set opset=18")
            p.add_argument("--models", nargs="+", help="export only these (teacher, baseline, distilled)")
            p.add_argument("--force", action="store_true", help="export again even when up to date")
            continue
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset field, e.g. --set distill.temperature=4 (repeatable)")
        if verb != "report":
            p.add_argument("--nproc", type=int, default=1, metavar="N",
                           help="processes on this machine: N > 1 runs the command under torchrun (DDP); batch "
                           "sizes stay global and are split across them (default: 1)")
        if verb in ("train-all", "distill", "train-baseline"):
            p.add_argument("--teacher-logits", metavar="FILE", help="soft labels that methods with teacher: file "
                           "learn from (csv, jsonl, parquet: a text column, one logit:<label> or prob:<label> column "
                           "per class); sets config teacher_logits")
        if verb == "train-all":
            p.add_argument("--force", action="store_true", help="re-run stages that are already done")
            p.add_argument("--seeds", type=int, default=1, metavar="N", help="train the students at N seeds "
                           "(student.train.seed, +1, ...; the teachers shared), paired, and report the interval over "
                           "them (default: 1)")
        if verb == "teacher-logits":
            p.add_argument("--out", type=Path, required=True, help="the file to write (.csv, .jsonl or .parquet)")
            p.add_argument("--model", default="teacher", help="the run's teacher to write (default: teacher; or "
                           "teacher-ensemble, teacher-self-train, ...)")
        if verb == "bench-train":
            p.add_argument("--rows", type=int, default=2000, help="training rows per timed epoch")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return run(args)
    except KdError as exc:
        say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("kd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a full, read-only or forbidden place is the user's to fix, not a bug
        message = disk_error(exc)
        if message is None:
            raise
        say_error(f"{message}; free space or choose another --run-dir (RUN=...); files already finished were "
                  "left as they were")
        return 2


def launch(argv: list[str], nproc: int) -> int:
    """This same command under torchrun, nproc processes on this machine; the first failure's exit code."""
    from kd.device import cpu_count

    # torchrun would give each process 1 thread (with a banner saying so): share this machine's CPUs instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count() // nproc)))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    # torchrun's own log lines (a banner, then a failure repeated in log form): a failure is reported below
    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # loggers made from now on
    for name in list(logging.root.manager.loggerDict):  # and those made on import
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    # the processes need no --nproc (torchrun's parser would also take it for an abbreviation of its own)
    i = argv.index("--nproc") if "--nproc" in argv else None
    argv = [a for a in argv if not a.startswith("--nproc=")] if i is None else argv[:i] + argv[i + 2:]
    try:
        torchrun(get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "cli", *argv]))
    except ChildFailedError as exc:  # the process that failed has said why (kd: error: ...) unless it was killed
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            say_error(f"process {rank} of {nproc} was killed by signal {-failure.exitcode}; the run folder keeps the "
                  "stages already finished and the last whole checkpoint")
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


# what a full, read-only or foreign-owned output folder raises: the user's to fix, not a bug
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(exc: BaseException) -> str | None:
    """The one-line cause when exc (or what caused it) is a disk full / read-only / permission error."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
            return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        if "No space left on device" in str(exc):  # libraries in Rust/C++ (safetensors, arrow) wrap the OSError
            return "No space left on device"
        exc = exc.__cause__ or exc.__context__
    return None


def run(args) -> int:
    if args.verb in EXPORT_VERBS:
        return run_export_verb(args)
    if args.verb in BENCH_VERBS:
        return run_bench_verb(args)
    if args.verb == "study":
        from kd.study import load_study, parse_shard, report_study, run_study, with_settings

        shard = parse_shard(args.shard)
        if args.address and args.executor != "ray":
            raise KdError(f"--address {args.address}: only with --executor ray")
        study = with_settings(load_study(args.study), args.overrides)
        root = args.run_dir or default_run_dir(study.name)
        if args.plan:
            from kd.study.plan import plan_rows, render_plan
            from kd.study.record import read_record

            pilot = args.pilot or root
            record = read_record(pilot)
            if record is None or not record.finished:
                raise KdError(f"--plan: {pilot}: no finished study cells to read (give a study folder: --pilot)")
            target = args.precision or study.precision or 1.5
            print(render_plan(study, plan_rows(study, record.finished, target, args.effect), str(pilot), 0.8))
        elif args.report:
            report_study(study, root)
        else:
            run_study(study, root, args.data, SECTIONS, args.executor, args.address, shard)
        return 0
    cfg = load_config(choose_preset(args.preset), args.overrides, SECTIONS)
    if args.data:
        cfg.data.source = args.data  # as written: a path or a hub id is not YAML
    if getattr(args, "teacher_logits", None):
        cfg.teacher_logits = args.teacher_logits  # as written, like --data
    run_dir = args.run_dir or default_run_dir(cfg.preset)
    if args.verb == "report":
        from kd.report import write_report
        from kd.runfolder import RunFolder

        write_report(RunFolder(run_dir))
        return 0
    if args.nproc < 1:
        raise KdError(f"--nproc {args.nproc}: expected a positive number of processes (NPROC=...)")
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        from kd.trainer import batch_plans

        batch_plans(cfg, args.nproc)  # an uneven split stops here, before any process starts
        return launch(args.argv, args.nproc)
    if args.verb == "bench-train":
        from bench.train_speed import train_speed

        train_speed(cfg, run_dir, args.rows)
        return 0

    from kd.run import RunContext, run_verb

    ctx = RunContext(cfg, run_dir)
    if args.verb == "teacher-logits":
        from kd.run.teachers import write_teacher_logits

        write_teacher_logits(ctx, args.model, args.out)
        return 0
    if args.verb == "train-all":
        from kd.run.seeds import seeds_of, train_seeds

        seeds_of(cfg, args.seeds)  # a wrong count stops here, before any work
        train_seeds(ctx, args.seeds, force=args.force)
    else:
        run_verb(ctx, args.verb)
    return 0


def run_export_verb(args) -> int:
    if args.verb == "predict":
        from engines.predict import format_lines, load, predict, read_texts

        texts = list(args.texts) + (read_texts(args.file) if args.file else [])
        if not texts:
            raise KdError("predict: no texts; give them as arguments or with --file")
        loaded = load(args.model, args.allow_pickle)
        print(format_lines(predict(loaded, texts, args.batch_size), args.json))
        return 0
    run_dir = args.run_dir or default_run_dir(Path(choose_preset(args.preset)).stem)
    if args.verb == "export":
        from export.config import export_config

        cfg = export_config(run_dir, args.overrides)  # a mistake in it stops here, before any engine is imported
        from export.run import export_run

        export_run(run_dir, cfg, args.models, args.data, args.force)
    else:
        from export.check import export_check

        export_check(run_dir, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
