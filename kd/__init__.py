"""kd-bench: distil a BERT teacher into a DistilBERT student and measure what it buys."""

__version__ = "0.1.0"
