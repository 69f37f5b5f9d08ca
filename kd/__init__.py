"""kd-bench: distil a BERT teacher into a DistilBERT student and measure what it buys.

`from kd import DistillationTrainer` is the Python API (docs/api.md); it is imported on first use, so that the
command line starts without torch."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "DistillationTrainer":
        from kd.trainer import DistillationTrainer

        return DistillationTrainer
    raise AttributeError(f"module 'kd' has no attribute {name!r}")
