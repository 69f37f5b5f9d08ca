"""manifest.json: what a run was made from (config, versions, commit, device, data) and how long it took."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from kd.device import cpu_count
from kd.runfolder import RunFolder

PACKAGES = ("kd-bench", "torch", "transformers", "tokenizers", "datasets", "accelerate", "scikit-learn",
            "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf")


def installed_versions(names) -> dict[str, str]:
    """The version of each distribution that is installed (read from its metadata: nothing is imported)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def package_versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], **installed_versions(PACKAGES)}


def git_commit() -> str | None:
    if os.environ.get("KD_GIT_COMMIT"):  # set in the images, which hold no .git
        return os.environ["KD_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def colon_fields(text: str) -> dict[str, str]:
    """`key: value` lines (lscpu) or `key<TAB>: value` lines (/proc/cpuinfo, first processor only), keys in lower
    case, the first of a repeated key kept."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and out:
            break  # /proc/cpuinfo: the first processor's block is enough
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def first_cpu() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none: macOS, Windows)."""
    try:
        return colon_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


def cpu_model() -> str:
    """The CPU's model name, which every time and speed ratio holds for (platform.processor() is often empty or
    just the architecture on Linux)."""
    return first_cpu().get("model name") or platform.processor() or platform.machine()


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "cpu": cpu_model(), "cpus_usable": cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass(frozen=True)
class RunStart:
    """What a command records in the manifest as it starts (kd.run.context.RunContext.start_record)."""

    config: dict
    device: str
    precision: str  # the teacher's
    processes: int
    batches: dict[str, dict]  # role -> its BatchPlan
    source: str
    label_names: list[str]
    rows: dict[str, int]  # split -> rows (students' train rows, labelled ones among them)
    fingerprints: dict[str, str]


def start(run: RunFolder, command: str, facts: RunStart) -> None:
    """The manifest's record of what `command` starts from (call it from the main process only)."""
    run.update_manifest(
        config=facts.config,
        command=command,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        versions=package_versions(),
        git_commit=git_commit(),
        device={**device_info(facts.device), "precision": facts.precision, "processes": facts.processes},
        batches=facts.batches,
        data={"source": facts.source, "label_names": facts.label_names, "rows": facts.rows,
              "fingerprints": facts.fingerprints},
    )


def record_stage(run: RunFolder, stage: str, seconds: float | None, metrics: dict) -> None:
    entry = {"seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if "accuracy" in metrics:
        entry["accuracy"] = metrics["accuracy"]
    run.update_manifest(stages={stage: entry})
