"""The one typed reader (kd/typed.py) on containers: the mistakes inside a list, a mapping or a nested section that
the scalar-only checker let through, in the run config, a recipe and a study, each one error line naming the file,
the field, the value and what was expected."""

from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from kd.errors import KdError
from kd.typed import KEY, REST, Check, read, to_data


@pytest.mark.parametrize("override,message", [
    # a list item of the wrong type: before, methods=[1] reached the method loader and raised a traceback
    ("methods=[baseline, 1]", r"^config methods: 1: expected a text$"),
    ("data.label_names=World", r"^config data.label_names='World': expected a list$"),
    ("teacher.arch={on: 1}", r"^config: teacher.arch: setting True is not a name \(YAML reads on, off"),
    ("teacher=3", r"^config teacher=3: expected a mapping with model, tokenizer, arch, finetune, train$"),
    ("student.train.batch_size=true", r"^config student.train.batch_size=True: expected an integer$"),
])
def test_run_config_containers_are_checked(override, message):
    from kd.config import load_config

    with pytest.raises(KdError, match=message):
        load_config("smoke", [override])


@pytest.mark.parametrize("text,message", [
    # a term item that is not a mapping: before, "terms: [ce]" said only what a term should look like
    ("terms: [ce]\n", r"m.yaml: terms: 'ce': expected a mapping with term, weight, \.\.\.$"),
    ("terms: [{term: ce}, {weight: 1}]\n", r"m.yaml: terms\[1\]: term: expected a text$"),
    ("terms: [{term: kl, weight: [1]}]\n", r"m.yaml: terms\[0\]: weight=\[1\]: expected a number >= 0$"),
    ("terms: {term: ce}\n", r"m.yaml: terms=\{'term': 'ce'\}: expected a list of \{term: NAME"),
    ("description: [a, b]\nterms: [{term: ce}]\n", r"m.yaml: description=\['a', 'b'\]: expected a text$"),
    ("name: mine\nterms: [{term: ce}]\n", r"m.yaml: unknown key 'name' \(known: calibrate, description"),
    ("- ce\n", r"m.yaml: expected a mapping with terms, description, .*, got \['ce'\]$"),
])
def test_recipe_containers_are_checked(tmp_path, text, message):
    from kd.methods import load_method

    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(KdError, match=message):
        load_method(str(tmp_path / "m.yaml"))


@pytest.mark.parametrize("text,message", [
    # a nested field of the wrong type: before, depths: [1] reached the cell names and raised a traceback
    ("base: smoke\ndepths: [1]\n", r"s.yaml: depths: 1: expected a text$"),
    ("base: smoke\nseeds: [1, x]\n", r"s.yaml: seeds: 'x': expected an integer$"),
    ("base: smoke\nbudgets: [100, true]\n", r"s.yaml: budgets: True: expected a positive number of labelled rows"),
    ("base: smoke\nmethods: [kd, {a: 1}]\n", r"s.yaml: methods: \{'a': 1\}: expected a text$"),
    ("base: smoke\nset: [1]\n", r"s.yaml: set=\[1\]: expected a mapping of dotted run-config keys to values$"),
    ("base: smoke\ncpus: 0\n", r"s.yaml: cpus=0: expected a positive number of CPU threads per cell, or null$"),
])
def test_study_containers_are_checked(tmp_path, text, message):
    from kd.study import load_study

    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(KdError, match=message):
        load_study(str(tmp_path / "s.yaml"))


@dataclass
class Inner:
    kind: Literal["a", "b"]
    size: Annotated[int, Check(lambda n: n > 0, "a positive size")] = 1


@dataclass
class Outer:
    items: list[Inner]
    best: Inner | None = None
    odd: bool = field(default=False, metadata={KEY: "odd_at_0.5"})
    rest: dict[str, int] = field(default_factory=dict, metadata={REST: True})


def test_a_union_says_the_deeper_mistake_and_a_file_round_trips():
    with pytest.raises(KdError, match=r"^f.json: best.size=0: expected a positive size$"):
        read(Outer, {"items": [], "best": {"kind": "a", "size": 0}}, "f.json:")
    with pytest.raises(KdError, match=r"^f.json: best='x': expected a mapping with kind, size or null$"):
        read(Outer, {"items": [], "best": "x"}, "f.json:")
    with pytest.raises(KdError, match=r"^f.json: items\[1\]: kind='c': expected one of a, b; rebuild it$"):
        read(Outer, {"items": [{"kind": "a"}, {"kind": "c"}]}, "f.json:", fix="rebuild it")
    with pytest.raises(KdError, match=r"^f.json: items: expected a list$"):
        read(Outer, {}, "f.json:")
    with pytest.raises(KdError, match=r"^f.json: extra='x': expected an integer$"):
        read(Outer, {"items": [], "extra": "x"}, "f.json:")
    raw = {"items": [{"kind": "b", "size": 3}], "best": None, "odd_at_0.5": True, "extra": 4}
    obj = read(Outer, raw, "f.json:")
    assert obj == Outer([Inner("b", 3)], None, True, {"extra": 4})
    assert to_data(obj) == raw
