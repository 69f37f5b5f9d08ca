import pytest

from kd.config import available_presets, load_config
from kd.errors import KdError


def test_three_presets_load_with_their_settings():
    assert {"smoke", "cpu", "full"} <= set(available_presets())
    full = load_config("full")
    assert (full.teacher.model, full.teacher.finetune) == ("fabriceyhc/bert-base-uncased-ag_news", "never")
    assert (full.student.model, full.distill.temperature, full.distill.alpha) == ("distilbert-base-uncased", 5.0, 0.5)
    assert (full.student.train.epochs, full.student.train.learning_rate, full.student.train.warmup) == (3, 2e-5, 500)
    cpu = load_config("cpu")
    assert cpu.teacher.model == "bundled:all-MiniLM-L6-v2" and cpu.student.init == "from-teacher:0,2,4"


def test_overrides_are_typed_and_nested():
    cfg = load_config("smoke", ["distill.temperature=4", "student.train.epochs=2", "data.source=/x/y",
                                "teacher.arch.hidden_size=32"])
    assert cfg.distill.temperature == 4 and cfg.student.train.epochs == 2
    assert cfg.data.source == "/x/y" and cfg.teacher.arch["hidden_size"] == 32
    assert load_config("smoke").distill.temperature == 2.0  # the preset itself is untouched


def test_a_preset_pins_export_settings_that_kd_export_set_overrides(tmp_path):
    from export.config import export_config
    from kd.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    run.update_manifest(config=load_config("smoke").to_dict())
    assert export_config(run.root).speed_margin == 1.0  # smoke.yaml: no choice on speed
    assert export_config(run.root, ["speed_margin=0.1", "optimize=never"]).speed_margin == 0.1
    run.update_manifest(config=load_config("cpu").to_dict())
    assert export_config(run.root).speed_margin == 0.05  # no export section: the defaults


@pytest.mark.parametrize("override,message", [
    ("distill.temprature=4", "unknown key distill.temprature"),
    ("nonsense", "expected key=value"),
    ("export.optimise=never", "unknown key export.optimise"),  # the export section is checked up front too
])
def test_bad_overrides_name_the_key(override, message):
    from cli.main import SECTIONS

    with pytest.raises(KdError, match=message):
        load_config("smoke", [override], SECTIONS)


def test_scalar_fields_are_checked_and_yaml_1_1_exponents_read_as_numbers():
    cfg = load_config("smoke", ["teacher.train.learning_rate=2e-3", "student.train.early_stopping_patience=null",
                                "student.train.warmup=5"])
    assert cfg.teacher.train.learning_rate == 0.002 and isinstance(cfg.teacher.train.learning_rate, float)
    assert cfg.student.train.early_stopping_patience is None and cfg.student.train.warmup == 5
    with pytest.raises(KdError, match=r"teacher.train.learning_rate='fast': expected a number$"):
        load_config("smoke", ["teacher.train.learning_rate=fast"])
    with pytest.raises(KdError, match=r"student.train.batch_size=32.5: expected an integer$"):
        load_config("smoke", ["student.train.batch_size=32.5"])
    with pytest.raises(KdError, match=r"early_stopping_patience='x': expected an integer or null$"):
        load_config("smoke", ["student.train.early_stopping_patience=x"])
    with pytest.raises(KdError, match=r"allow_pickle='yes please': expected true or false$"):
        load_config("smoke", ["allow_pickle=yes please"])


def test_unknown_preset():
    with pytest.raises(KdError, match="preset 'tiny' not found"):
        load_config("tiny")


def test_section_hash_changes_only_with_its_sections():
    a, b = load_config("cpu"), load_config("cpu", ["distill.alpha=0.2"])
    assert a.section_hash("data", "teacher") == b.section_hash("data", "teacher")
    assert a.section_hash("distill") != b.section_hash("distill")


@pytest.mark.parametrize("overrides, message", [
    (["student.train.select=first"], r"student.train.select='first': expected one of best, last"),
    (["teacher.train.select=last"], r"teacher.train.select=last keeps the final weights, but early stopping "
                                    r"chooses by validation: set teacher.train.early_stopping_patience=null"),
    (["student.train.evals_per_epoch=0"], r"student.train.evals_per_epoch=0 leaves no validation pass"),
    (["student.train.min_steps=-5"], r"student.train.min_steps=-5: expected 0 or a positive number of steps"),
])
def test_how_a_stage_keeps_its_weights_is_checked(overrides, message):
    from kd.trainer import batch_plans

    cfg = load_config("cpu", overrides)
    with pytest.raises(KdError, match=message):
        batch_plans(cfg, 1)


def test_min_steps_lengthen_a_small_budget_and_keep_its_validation_passes_few(tmp_path):
    """100 labelled rows are 4 batches: min_steps raises the run to 100 steps with as many validation passes
    as the epochs asked for, not one per step; select=last keeps the final weights."""
    from kd.trainer import BatchPlan, training_arguments

    plan = BatchPlan(1, 32, 32, 128)
    cfg = load_config("smoke", ["student.train.min_steps=100", "student.train.select=last",
                                "student.train.epochs=1", "student.train.evals_per_epoch=2"])
    args = training_arguments(cfg.student.train, plan, tmp_path, 100, "cpu", "fp32")
    assert (args.max_steps, args.eval_steps, args.load_best_model_at_end) == (100, 50, False)
    # enough rows: the epochs decide, as before
    args = training_arguments(cfg.student.train, plan, tmp_path, 8000, "cpu", "fp32")
    assert (args.max_steps, args.num_train_epochs, args.eval_steps) == (-1, 1, 125)
    cfg = load_config("smoke", ["student.train.select=last", "student.train.evals_per_epoch=0"])
    args = training_arguments(cfg.student.train, plan, tmp_path, 8000, "cpu", "fp32")
    assert (args.eval_strategy, args.save_strategy) == ("no", "no")
    best = training_arguments(load_config("cpu").student.train, plan, tmp_path, 8000, "cpu", "fp32")
    assert best.load_best_model_at_end and best.metric_for_best_model == "accuracy"
