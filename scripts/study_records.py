"""A study's records without its weights: what its report, `--plan` and a resume read, small enough to keep
anywhere (a repository, an object store).

    python scripts/study_records.py RUN DEST

A study folder holds every cell's models (tens of MB each), its caches and its work folders. The report, `--plan`
and a resume read only the records: study.json, each cell's record (cells/<cell>.json), its manifest.json and
results.json, and each model's metrics.json. This copies those and the reports (*.md, the study's own *.png),
and nothing else, into DEST, over an earlier copy of the same study. A study run in parts on machines that do not
keep their disks goes on from the copy: put it back as the run folder and run the same `make study`; its
finished cells are taken as recorded. What a copy cannot do is score the models again:
scripts/study_other_rows.py keeps the scores it gave a cell while the cell's weights were there (other_rows.json,
copied too)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kd.runfolder import RunFolder

KEPT = {".json", ".md", ".png"}
# a run folder's layout, as RunFolder defines it: the data caches, Trainer checkpoints, exports and benches (rebuilt,
# never read back), and the model folders, of which only metrics.json is a record
_LAYOUT = RunFolder(Path("."))
SKIPPED = {_LAYOUT.cache_dir("-").parent.name, _LAYOUT.work_dir("-").parent.name, _LAYOUT.onnx_root.name,
           _LAYOUT.bench_dir.name}
MODELS = _LAYOUT.model_dir("-").parent.name


def kept(relative: Path) -> bool:
    """A record: a JSON or Markdown file outside the caches and work folders, and the study's own plots; of a
    model's folder only its metrics.json (the rest is its weights, tokenizer and config, which tokenizer.json alone
    makes 0.7 MB). A cell's own plots (0.4 MB a cell) stay behind with its weights."""
    parts = relative.parts
    if relative.suffix not in KEPT or SKIPPED & set(parts) or (relative.suffix == ".png" and len(parts) > 1):
        return False
    return MODELS not in parts or relative.name == "metrics.json"


def copy_records(run: Path, dest: Path) -> list[Path]:
    if not (run / "study.json").is_file():
        raise SystemExit(f"{run}: no study.json: expected a study's run folder (kd study NAME --run-dir RUN)")
    if dest.resolve().is_relative_to(run.resolve()):
        raise SystemExit(f"{dest}: inside the study folder {run}; expected a folder outside it")
    copied = []
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if path.is_file() and not path.is_symlink() and kept(relative):
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / relative)
            copied.append(relative)
    return copied


def main(args: list[str]) -> int:
    if len(args) != 2:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    copied = copy_records(Path(args[0]), Path(args[1]))
    size = sum((Path(args[1]) / p).stat().st_size for p in copied)
    print(f"{len(copied)} records ({size / 1e6:.1f} MB) copied to {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
