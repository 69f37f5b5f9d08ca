"""A run is a table of stages (kd/run/stages.py): a teacher procedure is one function and one row. Shown by a toy
procedure defined here, with no edit of kd/: a teacher used at its starting weights, which a student named in a
recipe file (`teacher: untrained`) then learns from through the cached-logits path like any other."""

import dataclasses
import json

import numpy as np
import pytest

TOY = "teacher-untrained"  # the model folder of the toy procedure "untrained" (kd.methods.Method.teacher_model)
SMALL = ["data.train_rows=480", "data.validation_rows=80", "data.test_rows=120", "data.labelled_rows=100",
         "teacher.train.epochs=1", "student.train.epochs=1", "teacher.train.evals_per_epoch=1",
         "student.train.evals_per_epoch=1"]


def untrained_teacher(ctx, key: str) -> dict:
    """The toy procedure: the teacher as it loads (its head at its seeded starting weights), tested and saved."""
    from kd.models import load_teacher
    from kd.run.fit import Trained, score_test_and_save

    t = load_teacher(ctx.cfg, ctx.splits.label_names)
    return score_test_and_save(ctx, TOY, key, Trained(t.model, "teacher"), t.tokenizer, {"procedure": "untrained"})


def toy_row():
    from kd.run import Stage
    from kd.run.keys import teacher_key

    return Stage(TOY, lambda ctx: teacher_key(ctx, TOY), untrained_teacher)


def toy_run(run):
    from kd.config import load_config
    from kd.methods import load_method
    from kd.run import RunContext

    recipe = run.parent / "kd-untrained.yaml"  # kd's recipe, learning from the toy procedure
    recipe.write_text("teacher: untrained\nrows: all\nterms:\n  - {term: ce}\n  - {term: kl}\n")
    return RunContext(load_config("smoke", SMALL), run, methods=[load_method("baseline"), load_method(str(recipe))])


def test_a_toy_teacher_procedure_is_one_function_and_one_row(tmp_path, capsys):
    from kd.errors import KdError
    from kd.run import TEACHERS, stages, train_all
    from kd.run.keys import student_key, teacher_key

    run = tmp_path / "run"
    ctx = toy_run(run)
    table = (*TEACHERS, toy_row())
    assert list(stages(ctx, table)) == ["teacher", TOY, "baseline", "kd-untrained"]  # no self-trained teacher here
    train_all(ctx, teachers=table)

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["models"] == ["teacher", TOY, "baseline", "kd-untrained"]
    toy = json.loads((run / f"models/{TOY}/metrics.json").read_text())
    assert toy["procedure"] == "untrained" and toy["train_seconds"] is None
    assert toy["stage_key"] == teacher_key(ctx, TOY)
    logits = np.load(run / f"models/{TOY}/test_logits.npy")
    assert logits.shape == (120, 4) and toy["accuracy"] == pytest.approx(
        float((logits.argmax(-1) == np.load(run / "test_labels.npy")).mean()))
    student = json.loads((run / "models/kd-untrained/metrics.json").read_text())
    assert student["teacher"] == TOY and student["method"] == "kd-untrained"
    assert student["stage_key"] == student_key(ctx, ctx.methods[1]) != student_key(
        ctx, dataclasses.replace(ctx.methods[1], teacher="finetune"))  # bound to the toy teacher's weights
    # the student learned from the toy teacher's logits, cached and bound to its weights (baseline reads none)
    (entry,) = (run / "cache/teacher_logits").iterdir()
    made_from = json.loads((entry / "kd_cache.json").read_text())["made_from"]
    assert made_from["teacher_weights"] == toy["weights_sha256"] != json.loads(
        (run / "models/teacher/metrics.json").read_text())["weights_sha256"]
    assert np.load(entry / "logits.npy").shape == (480 - 80, 4)
    assert "kd-untrained" in json.loads((run / "results.json").read_text())["models"]

    capsys.readouterr()
    train_all(toy_run(run), teachers=table)  # a second run: every stage current, none trains again
    out = capsys.readouterr().out
    assert all(f"{name}: already done with this config, skipped" in out
               for name in ("teacher", TOY, "baseline", "kd-untrained")), out
    assert "training from the start" not in out

    with pytest.raises(KdError, match=f"method kd-untrained: teacher=untrained: no teacher procedure makes '{TOY}' "
                       r"\(expected one of none, finetune, file, ensemble, self-train, self-train-ensemble\)"):
        train_all(toy_run(tmp_path / "without"))  # the table without the toy row
    assert not (tmp_path / "without").exists()
