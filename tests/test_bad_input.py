"""The bad-input catalogue: every mistake a user can make with data, models, the CLI or the run folder gives
one line naming what, where and what was expected, exit code 2, and leaves an existing run folder as it was.

Each case runs the real `kd` entry point (in this process, for speed) against a copy of the smoke run. The
table under "Bad input" in docs/reliability.md is checked against this catalogue, so neither can change
without the other.
"""

import contextlib
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, sample_rows, tree_state, write_csv

from cli.main import main
from kd import models
from kd.config import AG_NEWS_LABELS


@dataclass
class Case:
    input: str  # the first column of the table in docs/reliability.md
    message: str  # what the one error line must contain (no paths: they differ per machine)
    argv: Callable[[Path, Path], list]  # (scratch folder, run folder) -> kd arguments
    in_scratch: bool = False  # kd runs in the scratch folder (for a --data path relative to where kd runs)


def data(tmp: Path, train=None, test=None, header=("label", "text")) -> Path:
    """A small data folder from real AG News rows; train/test given as rows, bytes or text replace a file."""
    folder = tmp / "data"
    for name, rows, default in (("train", train, sample_rows("train", 20)), ("test", test, sample_rows("test", 5))):
        path = folder / f"{name}.csv"
        if isinstance(rows, bytes):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rows)
        elif isinstance(rows, str):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(rows)
        else:
            write_csv(path, rows if rows is not None else default, header)
    return folder


def data_named(name: str) -> Callable[[Path, Path], list]:
    """--data NAME, relative to the scratch folder kd runs in: a folder of that name whose train.csv has no rows,
    so the error names the file under the folder exactly as given (never read as YAML)."""
    def argv(tmp: Path, run: Path) -> list:
        shutil.move(data(tmp, train="label,text\n"), tmp / name)
        return ["train-all", "--preset", "smoke", "--run-dir", run, "--data", name]

    return argv


def train_all(*extra) -> Callable[[Path, Path], list]:
    return lambda tmp, run: ["train-all", "--preset", "smoke", "--run-dir", run, *extra]


def with_data(**files) -> Callable[[Path, Path], list]:
    return lambda tmp, run: ["train-all", "--preset", "smoke", "--run-dir", run, "--data", data(tmp, **files)]


def study_file(text: str) -> Callable[[Path, Path], list]:
    """`kd study` on a study file with this text, into the run folder (which must stay as it was)."""
    def argv(tmp: Path, run: Path) -> list:
        (tmp / "mine.yaml").write_text(text)
        return ["study", tmp / "mine.yaml", "--run-dir", run]

    return argv


def tiny_bert(folder: Path, head_labels: dict | None = None, vocab_size: int = 30522) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    if head_labels is None:
        BertModel(config).save_pretrained(folder)
    else:
        config.update({"num_labels": len(head_labels), "id2label": head_labels})
        BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def teacher(make: Callable[[Path], Path]) -> Callable[[Path, Path], list]:
    return lambda tmp, run: train_all("--set", f"teacher.model={make(tmp / 'teacher')}")(tmp, run)


def truncated(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def pickled_only(folder: Path) -> Path:
    tiny_bert(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickled")  # refused before anything reads it
    return folder


def remote_code(folder: Path) -> Path:
    tiny_bert(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom-bert", architectures=["CustomModel"],
                  auto_map={"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def other_vocab_student(tmp: Path, run: Path) -> list:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models.resolve_source("bundled:all-MiniLM-L6-v2", "t"))
    tok.add_tokens(["kdbenchtoken"])
    tok.save_pretrained(tmp / "tok")
    return train_all("--set", f"teacher.model={tiny_bert(tmp / 'teacher')}", "--set", "student.init=from-teacher:0",
                     "--set", f"student.tokenizer={tmp / 'tok'}")(tmp, run)


def small_vocab_student(tmp: Path, run: Path) -> list:
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
                    ).save_pretrained(tmp / "student")
    return train_all("--set", "student.init=pretrained", "--set", f"student.model={tmp / 'student'}",
                     "--set", "student.tokenizer=bundled:all-MiniLM-L6-v2")(tmp, run)


@functools.cache
def student_texts() -> tuple[str, ...]:
    """The smoke preset's student rows' texts, which a teacher-logits file must cover."""
    from kd.config import load_config
    from kd.run import RunContext

    return tuple(RunContext(load_config("smoke"), Path("unused")).student_train["text"][:])


def teacher_file(change: Callable[[list, list], tuple[list, list]]) -> Callable[[Path, Path], list]:
    """train-all of a file-taught student on a teacher-logits file of every student row, changed by `change`."""
    def argv(tmp: Path, run: Path) -> list:
        header = ["text", *(f"logit:{n}" for n in AG_NEWS_LABELS)]
        header, rows = change(header, [[t, "0.5", "-1.0", "2.0", "0.0"] for t in student_texts()])
        write_csv(tmp / "teacher.csv", rows, header)
        return train_all("--teacher-logits", tmp / "teacher.csv", "--set", "methods=[file-kd]")(tmp, run)

    return argv


def probabilities_off(header: list, rows: list) -> tuple[list, list]:
    return ["text", *(h.replace("logit:", "prob:") for h in header[1:])], [[r[0], "0.5", "0.3", "0.1", "0.05"]
                                                                         for r in rows]


def edit_manifest(change: Callable[[Path], None], verb="train-all") -> Callable[[Path, Path], list]:
    def argv(tmp, run):
        change(run / "manifest.json")
        return [verb, "--preset", "smoke", "--run-dir", run]
    return argv


def older_format(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 1
    path.write_text(json.dumps(manifest))


def run_model_truncated(verb: str) -> Callable[[Path, Path], list]:
    def argv(tmp, run):
        truncated(run / "models" / "baseline")
        return [verb, "--preset", "smoke", "--run-dir", run]
    return argv


def empty_run(verb: str) -> Callable[[Path, Path], list]:
    def argv(tmp, run):
        (tmp / "empty").mkdir()
        return [verb, "--preset", "smoke", "--run-dir", tmp / "empty"]
    return argv


CATALOGUE = [
    # data
    Case("data folder missing", "does not exist: expected a folder with train.csv and test.csv",
         lambda tmp, run: ["train-all", "--preset", "smoke", "--run-dir", run, "--data", tmp / "nowhere"]),
    Case("--data with ' #' in the path", "my #set/train.csv: has a header but no rows", data_named("my #set"),
         in_scratch=True),
    Case("--data a folder named 2024", "2024/train.csv: has a header but no rows", data_named("2024"),
         in_scratch=True),
    Case("--data with a colon in the path", "news: v2/train.csv: has a header but no rows", data_named("news: v2"),
         in_scratch=True),
    Case("train or test file missing", "no test.csv, test.jsonl or test.parquet found",
         lambda tmp, run: ["train-all", "--preset", "smoke", "--run-dir", run, "--data",
                           (data(tmp), (tmp / "data/test.csv").unlink(), tmp / "data")[-1]]),
    Case("empty file", "train.csv: the file is empty; expected a header with label,text", with_data(train="")),
    Case("header only", "train.csv: has a header but no rows", with_data(train="label,text\n")),
    Case("no text column", "no column 'text' (columns: label, body); name the text column with "
         "--set data.text_column=NAME", with_data(header=("label", "body"))),
    Case("no label column", "no column 'label' (columns: topic, text); name the label column with "
         "--set data.label_column=NAME", with_data(header=("topic", "text"))),
    Case("label outside the label set", "row 2 has label 7: expected an integer 0-3",
         with_data(train=[("1", "a text"), ("7", "another text")])),
    Case("non-integer label", "row 2 has label '1.5': expected an id 0-3 or one of the names",
         with_data(train=[("1", "a text"), ("1.5", "another text")])),
    Case("label names not declared", "--set data.label_names=",
         with_data(train=[("1", "a text"), ("Weather", "another text")])),
    Case("empty or whitespace-only text", "row 2 has an empty text in column 'text'",
         with_data(train=[("1", "a text"), ("2", "   ")])),
    Case("non-UTF-8 bytes", "test.csv: could not be read as csv: it is not UTF-8 text",
         with_data(test=b"label,text\n1,caf\xe9 \xff\n")),
    Case("a test label that train never has", "label 3 (Sci/Tech) occurs in the test rows but never in",
         with_data(train=[r for r in sample_rows("train", 20) if r[0] != "3"])),
    Case("a declared label with no rows", "label 3 (Sci/Tech) never occurs; every label in data.label_names needs "
         "training rows", with_data(train=[r for r in sample_rows("train", 20) if r[0] != "3"],
                                    test=[r for r in sample_rows("test", 5) if r[0] != "3"])),
    Case("a label budget smaller than the label count", "data.labelled_rows=2: expected at least one row per "
         "label (4) and at most 1996 of the 2000 rows (or all of them)", train_all("--set", "data.labelled_rows=2")),
    Case("validation split larger than train", "data.validation_rows=5000: expected at least one row per label",
         train_all("--set", "data.validation_rows=5000")),
    # models
    Case("teacher with another label count", "has 3 labels (a, b, c); the data has 4",
         teacher(lambda f: tiny_bert(f, {0: "a", 1: "b", 2: "c"}))),
    Case("teacher with other label names", "labels ['a', 'b', 'c', 'd'] do not match the data's",
         teacher(lambda f: tiny_bert(f, {0: "a", 1: "b", 2: "c", 3: "d"}))),
    Case("student tokenizer with another vocabulary than the teacher's (from-teacher init)",
         "student.init=from-teacher copies the teacher's embeddings, so the student needs the teacher's vocabulary",
         other_vocab_student),
    Case("tokenizer larger than the model's embedding", "has 30522 tokens but the student model's embedding has "
         "100 rows", small_vocab_student),
    Case("truncated model.safetensors (a model folder given)", "is not a whole safetensors file",
         teacher(lambda f: truncated(tiny_bert(f)))),
    Case("only pickled weights (pytorch_model.bin)", "holds only pickled weights (pytorch_model.bin), which can "
         "run code when loaded", teacher(pickled_only)),
    Case("model that needs its own code (auto_map)", "contains custom code",
         teacher(remote_code)),
    # soft labels from a file (--teacher-logits; kd/teacherfile.py)
    Case("teacher-logits file without a row for a student text", "no row for the students' train row 2000",
         teacher_file(lambda h, rows: (h, rows[:-1]))),
    Case("teacher-logits file with a text twice", "rows 1 and 2001 have the same text",
         teacher_file(lambda h, rows: (h, rows + rows[:1]))),
    Case("teacher-logits file with the wrong number of classes", "3 logit columns (World, Sports, Business), "
         "expected 4: one per class (World, Sports, Business, Sci/Tech)",
         teacher_file(lambda h, rows: (h[:-1], [r[:-1] for r in rows]))),
    Case("teacher-logits probabilities that do not sum to 1", "row 1: the prob columns sum to 0.95, expected 1 "
         "(within 0.001)", teacher_file(probabilities_off)),
    Case("teacher-logits value not finite (NaN, inf)", "row 3, column logit:Sports: 'nan'; expected a finite number",
         teacher_file(lambda h, rows: (h, [*rows[:2], [rows[2][0], "0.5", "nan", "2.0", "0.0"], *rows[3:]]))),
    Case("teacher-logits columns in another order than the data's labels", "the logit columns name the classes in "
         "the order Sports, World, Business, Sci/Tech, but the data's order is World, Sports, Business, Sci/Tech",
         teacher_file(lambda h, rows: ([h[0], h[2], h[1], *h[3:]], rows))),
    Case("teacher: file without a file", "a method has teacher=file, but the run names no file of soft labels: "
         "pass --teacher-logits FILE", train_all("--set", "methods=[file-kd]")),
    # run folder
    Case("run folder of another preset", "holds a 'smoke' run, not 'cpu'",
         lambda tmp, run: ["train-all", "--preset", "cpu", "--run-dir", run]),
    Case("run folder of an older format", "has format 1, this kd-bench reads format 2",
         edit_manifest(older_format)),
    Case("damaged manifest.json", "manifest.json: not readable JSON (JSONDecodeError)",
         edit_manifest(lambda p: p.write_text('{"format_version": 2, "con'))),
    Case("truncated model in the run (train-all)", "its sha256 is not the one recorded when the baseline stage "
         "saved it", run_model_truncated("train-all")),
    Case("truncated model in the run (export)", "its sha256 is not the one recorded", run_model_truncated("export")),
    Case("truncated model in the run (bench)", "its sha256 is not the one recorded", run_model_truncated("bench")),
    Case("export on a run without models", "no trained models in", empty_run("export")),
    Case("bench on a run without models", "no trained models in", empty_run("bench")),
    # command line
    Case("unknown --set key", "config: unknown key distill.temprature", train_all("--set", "distill.temprature=3")),
    Case("--set without a value", "--set 'distill.temperature': expected key=value",
         train_all("--set", "distill.temperature")),
    Case("a setting of the wrong type", "config teacher.train.learning_rate='fast': expected a number",
         train_all("--set", "teacher.train.learning_rate=fast")),
    Case("unknown preset", "preset 'tiny' not found: expected one of",
         lambda tmp, run: ["train-all", "--preset", "tiny", "--run-dir", run]),
    Case("unknown method", "method 'nope' not found: expected one of ['baseline', 'ensemble-kd', 'file-kd', 'kd', "
         "'kd-attention', 'kd-calibrated', 'kd-hidden', 'pseudo-label', 'self-train-ensemble-kd', 'self-train-kd'] "
         "or a .yaml file",
         lambda tmp, run: ["train-all", "--preset", "smoke", "--set", "methods=[baseline,nope]", "--run-dir", run]),
    Case("unknown study",
         "study 'tiny' not found: expected one of ['dev-recipe', 'study-cpu', 'study-full', 'study-lowlabel', "
         "'study-methods', 'study-smoke', 'study-teachers']",
         lambda tmp, run: ["study", "tiny", "--run-dir", run]),
    Case("a study with a seed listed twice", "seeds=[1, 1]: expected a list of different integers",
         study_file("base: smoke\nseeds: [1, 1]\n")),
    Case("a study with a budget that is not a row count", "budgets: 0: expected a positive number of labelled "
         "rows or 'all'", study_file("base: smoke\nbudgets: [0, all]\n")),
    Case("a study setting that is not a run setting", "mine.yaml: config: unknown key student.train.epoch",
         study_file("base: smoke\nset: {student.train.epoch: 2}\n")),
    Case("a study's primary comparison of a method it does not train", "primary: ['kd-hidden', 'baseline']: "
         "expected two of the study's methods ['baseline', 'kd']",
         study_file("base: smoke\nprimary: [[kd-hidden, baseline]]\n")),
    Case("a study's precision without a most seeds", "precision: 1.0: needs primary comparisons whose intervals "
         "it bounds and max_seeds", study_file("base: smoke\nprimary: [[kd, baseline]]\nprecision: 1.0\n")),
    Case("a study shard outside its count", "--shard 3/2: expected i/N with 1 <= i <= N",
         lambda tmp, run: ["study", "study-smoke", "--run-dir", run, "--shard", "3/2"]),
    Case("a Ray address where no head answers", "--address 127.0.0.1:1: no Ray head answers there (Connection "
         "refused)", lambda tmp, run: ["study", "study-smoke", "--run-dir", run, "--executor", "ray",
                                       "--address", "127.0.0.1:1"]),
    Case("a Ray address that is not one", "--address 127.0.0.1: expected HOST:PORT of a Ray head",
         lambda tmp, run: ["study", "study-smoke", "--run-dir", run, "--executor", "ray", "--address", "127.0.0.1"]),
    Case("a batch that does not split across the processes", "student.train.batch_size=30: batch sizes are "
         "global and split evenly across processes; expected a positive multiple of the 4 processes",
         train_all("--nproc", "4", "--set", "student.train.batch_size=30")),
]
# cases that need a changed machine (a checksum, a read-only or a full disk): tested below, in docs/reliability.md
SPECIAL = {
    "bundled MiniLM weights changed": "bundled:all-MiniLM-L6-v2: ",
    "unwritable run folder": "cannot write there",
    "disk full during a run": "No space left on device; free space or choose another --run-dir",
    "--executor ray without Ray installed": "--executor ray: Ray is not installed here: pip install -r "
                                            "requirements-ray.txt",
}


def run_kd(argv, capsys) -> str:
    """kd's exit code must be 2 with exactly one error line; returns that line."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("kd: error:")]
    assert code == 2, (code, err[-2000:])
    assert len(errors) == 1, err[-2000:]
    assert "Traceback" not in err + out
    return errors[0]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.input for c in CATALOGUE])
def test_bad_input_gives_one_line_exit_2_and_leaves_the_run_as_it_was(case, smoke_copy, tmp_path, capsys,
                                                                     monkeypatch):
    if case.in_scratch:
        monkeypatch.chdir(tmp_path)
    argv = case.argv(tmp_path, smoke_copy)
    before = tree_state(smoke_copy)
    line = run_kd(argv, capsys)
    assert case.message in line, line
    assert tree_state(smoke_copy) == before


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    line = run_kd(["study", "study-smoke", "--run-dir", tmp_path / "study", "--executor", "ray"], capsys)
    assert SPECIAL["--executor ray without Ray installed"] in line
    assert not (tmp_path / "study").exists()


def test_changed_bundled_weights_stop_the_run(smoke_copy, monkeypatch, capsys):
    package, sub, digest = models.BUNDLED["all-MiniLM-L6-v2"]
    monkeypatch.setitem(models.BUNDLED, "all-MiniLM-L6-v2", (package, sub, "0" * 64))
    monkeypatch.setattr(models, "_verified", set())
    before = tree_state(smoke_copy)
    line = run_kd(["train-all", "--preset", "smoke", "--run-dir", smoke_copy], capsys)
    assert SPECIAL["bundled MiniLM weights changed"] in line
    assert f"has sha256 {digest[:16]}..., expected 0000000000000000..." in line
    assert tree_state(smoke_copy) == before


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody may write to: chattr +i for root (which ignores modes), chmod for everyone else."""
    folder.mkdir()
    immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if not immutable:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_unwritable_run_folder_stops_before_any_work(tmp_path, capsys):
    with read_only(tmp_path / "locked") as locked:
        try:
            (locked / "probe").write_text("x")
            pytest.skip("this user can write anywhere (root without chattr)")
        except OSError:
            pass
        line = run_kd(["train-all", "--preset", "smoke", "--run-dir", locked / "run"], capsys)
        assert SPECIAL["unwritable run folder"] in line and str(locked / "run") in line
        assert not (locked / "run").exists()


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"a small disk needs a tmpfs mount, not permitted here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_full_disk_mid_run_exits_2_and_keeps_the_finished_files(smoke_copy, tmp_path, capsys):
    size = sum(p.stat().st_size for p in smoke_copy.rglob("*") if p.is_file()) // 2**20
    with small_disk(tmp_path / "disk", size + 3) as disk:  # room for the run, not for another student
        run = disk / "run"
        shutil.copytree(smoke_copy, run)
        finished = {k: v for k, v in tree_state(run).items() if not k.startswith(("work/", "manifest.json"))}
        line = run_kd(["distill", "--preset", "smoke", "--run-dir", run, "--set", "distill.temperature=4"], capsys)
        assert SPECIAL["disk full during a run"] in line
        after = tree_state(run)
        assert {k: v for k, v in after.items() if not k.startswith(("work/", "manifest.json"))} == finished
        assert not [k for k in after if k.endswith((".tmp", ".old"))], "no scratch files left beside the results"


def readme_rows() -> dict[str, str]:
    """The rows of the table under "## Bad input" in docs/reliability.md: input -> message."""
    text = (REPO / "docs" / "reliability.md").read_text()
    section = text[text.index("\n## Bad input\n") + 1:]
    section = section[:section.index("\n#", 1)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and not set(cells[0]) <= set("-: ") and cells[0] != "Input":
            rows[cells[0].replace("\\|", "|")] = cells[1].replace("`", "")
    return rows


def test_readme_table_lists_every_case_with_its_message():
    rows = readme_rows()
    expected = {c.input: c.message for c in CATALOGUE} | SPECIAL
    assert set(rows) == set(expected)
    for name, message in expected.items():
        assert re.sub(r"\s+", " ", message) in rows[name], name
