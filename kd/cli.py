"""The `kd` command: one verb per pipeline stage, each taking --preset, --data, --run-dir and --set."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kd.config import available_presets, load_config
from kd.errors import KdError

VERBS = {
    "train-all": "evaluate or fine-tune the teacher, train baseline and distilled students, write the report",
    "eval-teacher": "evaluate an already-trained teacher on test (no fine-tuning) and save it into the run",
    "train-teacher": "fine-tune the teacher when it needs it (teacher.finetune), evaluate it, save it",
    "train-baseline": "train the baseline student on hard labels only",
    "distill": "train the distilled student on cached teacher logits mixed with hard labels",
    "report": "write results.json, results.md and the plots from the run's models",
    "bench-train": "time one training epoch: baseline vs distillation (cached logits) vs the seed's way",
}
EXPORT_VERBS = {
    "export": "write fp32 and int8 ONNX for the run's models into <run>/onnx/, each checked against PyTorch",
    "export-check": "classify the test split with each export (plain InferenceSession) and compare with PyTorch",
    "export-speed": "time one model as PyTorch fp32, ONNX Runtime fp32 and int8, side by side on test texts",
    "predict": "label and probability per text, from a PyTorch folder, an ONNX folder or an .onnx file",
}


def choose_preset(requested: str | None) -> str:
    if requested:
        return requested
    from kd.device import detect_device

    device = detect_device()
    preset = "full" if device in ("cuda", "mps") else "cpu"
    reason = f"a {device.upper()} device is present" if device != "cpu" else "no CUDA or MPS device was found"
    print(f"kd: no preset given; using '{preset}' because {reason} (choose with --preset or PRESET=)",
          file=sys.stderr)
    return preset


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kd", description="Distil a BERT teacher into a DistilBERT student.")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, summary in {**VERBS, **EXPORT_VERBS}.items():
        p = verbs.add_parser(verb, help=summary, description=summary)
        if verb == "predict":
            p.add_argument("texts", nargs="*", help="texts to classify (or --file)")
            p.add_argument("--model", type=Path, required=True,
                           help="a save_pretrained folder (PyTorch), an export folder (its model.onnx) or an "
                           ".onnx file such as <run>/onnx/distilled/model_int8.onnx")
            p.add_argument("--file", type=Path, help="a UTF-8 file with one text per line")
            p.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
            p.add_argument("--batch-size", type=int, default=32)
            p.add_argument("--allow-pickle", action="store_true", help="allow pytorch_model.bin weights")
            continue
        p.add_argument("--preset", help=f"one of {available_presets()} or a YAML file "
                       "(default: full with CUDA/MPS, else cpu)")
        p.add_argument("--data", help="data folder (train/test .csv/.jsonl/.parquet) or hub dataset id "
                       "(default: $KD_DATA, data/ag_news/, ../shared/data/ag_news/, then the preset's hub id)")
        p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset>)")
        if verb == "export":
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override an export setting (export/config.py), e.g. --set opset=18")
            p.add_argument("--models", nargs="+", help="export only these (teacher, baseline, distilled)")
            p.add_argument("--force", action="store_true", help="export again even when up to date")
            continue
        if verb == "export-speed":
            p.add_argument("--model", default="distilled", help="which model of the run (default: distilled)")
            p.add_argument("--single", type=int, default=200, help="texts timed one at a time")
            p.add_argument("--batches", type=int, default=24, help="batches of 32 timed")
            continue
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset field, e.g. --set distill.temperature=4 (repeatable)")
        if verb == "train-all":
            p.add_argument("--force", action="store_true", help="re-run stages that are already done")
        if verb == "bench-train":
            p.add_argument("--rows", type=int, default=2000, help="training rows per timed epoch")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except KdError as exc:
        print(f"kd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kd: interrupted", file=sys.stderr)
        return 130


def default_run_dir(preset: str) -> Path:
    return Path(os.environ.get("KD_RUNS", "runs")) / preset


def run(args) -> int:
    if args.verb in EXPORT_VERBS:
        return run_export_verb(args)
    preset = choose_preset(args.preset)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.source={args.data}")
    cfg = load_config(preset, overrides)
    run_dir = args.run_dir or default_run_dir(cfg.preset)
    if args.verb == "report":
        from kd.report import write_report
        from kd.runfolder import RunFolder

        write_report(RunFolder(run_dir))
        return 0
    if args.verb == "bench-train":
        from kd.bench_train import bench_train

        bench_train(cfg, run_dir, args.rows)
        return 0

    from kd import manifest
    from kd.pipeline import Pipeline

    pipe = Pipeline(cfg, run_dir)
    if args.verb == "train-all":
        pipe.train_all(force=args.force)
        return 0
    need_student = args.verb in ("train-baseline", "distill")
    pipe.check_inputs(need_teacher=args.verb in ("eval-teacher", "train-teacher"), need_student=need_student)
    manifest.start(pipe, args.verb)
    if args.verb == "eval-teacher":
        pipe.stage_teacher(allow_finetune=False)
    elif args.verb == "train-teacher":
        pipe.stage_teacher()
    elif args.verb == "train-baseline":
        pipe.stage_baseline()
    elif args.verb == "distill":
        pipe.stage_distill()
    return 0


def run_export_verb(args) -> int:
    if args.verb == "predict":
        from export.predict import format_lines, load, predict, read_texts

        texts = list(args.texts) + (read_texts(args.file) if args.file else [])
        if not texts:
            raise KdError("predict: no texts; give them as arguments or with --file")
        loaded = load(args.model, args.allow_pickle)
        print(format_lines(predict(loaded, texts, args.batch_size), args.json))
        return 0
    run_dir = args.run_dir or default_run_dir(Path(choose_preset(args.preset)).stem)
    if args.verb == "export":
        from export.config import ExportConfig
        from export.run import export_run
        from kd.config import build_dataclass

        export_run(run_dir, build_dataclass(ExportConfig, {}, args.overrides), args.models, args.data, args.force)
    elif args.verb == "export-check":
        from export.check import export_check

        export_check(run_dir, args.data)
    else:
        from export.speed import export_speed

        export_speed(run_dir, args.model, args.data, args.single, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
