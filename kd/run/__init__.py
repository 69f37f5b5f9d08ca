"""A run as a table of stages (kd/run/stages.py): the teacher, the teacher procedures its methods learn from, a
student per method, then the report; each stage keyed (keys.py), fitted, tested and saved whole (fit.py), reading
one read-only run context (context.py) and the row sets of its label budget (rows.py)."""

from kd.run.context import RunContext
from kd.run.stages import TEACHERS, Stage, check_inputs, finished, run_verb, stages, train_all

__all__ = ["TEACHERS", "RunContext", "Stage", "check_inputs", "finished", "run_verb", "stages", "train_all"]
