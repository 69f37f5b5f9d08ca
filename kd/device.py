"""Which accelerator this process has, and the training precision that suits it."""

from __future__ import annotations

import os


def detect_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(requested: str, device: str) -> str:
    """auto: bf16 on CUDA that has it (else fp16), bf16 on CPUs with native bf16, fp32 elsewhere.

    MPS stays fp32: its autocast covers too few ops in torch 2.13 to pay off for training.
    """
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        from kd.errors import KdError

        raise KdError(f"train.precision={requested!r}: expected auto, fp32, bf16 or fp16")
    if requested != "auto":
        return requested
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def cpu_count() -> int:
    """CPUs this process may run on (a container's CPU limit included), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
