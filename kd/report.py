"""The comparison of a run's models: results.json, results.md and two plots."""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kd.atomic import write_bytes, write_text  # noqa: E402
from kd.config import key_settings  # noqa: E402
from kd.errors import KdError  # noqa: E402
from kd.metrics import ECE_BINS, gap_closed, mcnemar  # noqa: E402
from kd.results import (  # noqa: E402
    DataSummary,
    Device,
    Distillation,
    McNemar,
    MethodTest,
    ModelRow,
    OverSeeds,
    Results,
    SeedComparison,
    model_row,
)
from kd.runfolder import TEACHER, RunFolder, is_teacher  # noqa: E402
from kd.seeds import holm  # noqa: E402
from kd.typed import read  # noqa: E402


def load_metrics(run: RunFolder) -> dict[str, dict]:
    """Each model's metrics.json as the pipeline wrote it."""
    metrics = {name: json.loads((run.model_dir(name) / "metrics.json").read_text()) for name in run.model_names()}
    if not metrics:
        raise KdError(f"{run.root}: no trained models in models/; run `kd train-all` first")
    return metrics


def build_results(run: RunFolder) -> Results:
    manifest = run.read_manifest()
    where = f"{run.root / 'manifest.json'}:"
    metrics = load_metrics(run)
    models = {name: model_row(m, f"{run.model_dir(name) / 'metrics.json'}:") for name, m in metrics.items()}
    methods = method_tests(run, models)
    distillation = None
    if {"baseline", "distilled"} <= models.keys():
        test = methods["distilled"].mcnemar  # the unadjusted test, as this section always gave it
        acc = {n: m.accuracy for n, m in models.items()}
        distillation = Distillation(
            temperature=metrics["distilled"].get("temperature"), alpha=metrics["distilled"].get("alpha"),
            gain_pt=100 * (acc["distilled"] - acc["baseline"]),
            gap_closed=gap_closed(acc[TEACHER], acc["baseline"], acc["distilled"]) if TEACHER in acc else None,
            distilled_over_teacher=acc["distilled"] / acc[TEACHER] if TEACHER in acc else None,
            mcnemar=test, significant=test.p_value < 0.05)
    return Results(preset=manifest.get("config", {}).get("preset"), over_seeds=over_seeds(run, models),
                   device=read(Device, manifest.get("device"), where, ("device",)),
                   data=read(DataSummary, manifest.get("data"), where, ("data",)),
                   models=models, methods=methods, distillation=distillation,
                   teacher_label_match=metrics.get(TEACHER, {}).get("label_match"))


def method_tests(run: RunFolder, models: dict[str, ModelRow]) -> dict[str, MethodTest]:
    """Each student of a method against the baseline on the test rows: the accuracy gain and an exact McNemar test,
    Holm-adjusted for the number of methods compared (a run of many methods would otherwise find a "significant"
    one by chance)."""
    others = [n for n in models if n != "baseline" and not is_teacher(n)]
    if "baseline" not in models or not others:
        return {}
    labels = np.load(run.root / "test_labels.npy")
    base = np.load(run.model_dir("baseline") / "test_logits.npy").argmax(-1)
    tests = {n: McNemar(**mcnemar(labels, base, np.load(run.model_dir(n) / "test_logits.npy").argmax(-1)))
             for n in others}
    adjusted = holm(t.p_value for t in tests.values())
    return {n: MethodTest(method=models[n].method, teacher=models[n].teacher,
                          gain_pt=100 * (models[n].accuracy - models["baseline"].accuracy), mcnemar=t, p_holm=p,
                          significant=p < 0.05, compared=len(others))
            for (n, t), p in zip(tests.items(), adjusted)}


def over_seeds(run: RunFolder, models: dict[str, ModelRow]) -> OverSeeds | None:
    """This run's students and those of its seeds/ runs (kd/run/seeds.py) whose settings are this run's but for the
    students' seed: each student's accuracy over the seeds, and each against the baseline, paired by seed."""
    others = run.seed_runs()
    if not others:
        return None
    from kd.seeds import mean_interval, paired_difference, share_won, sign_flip_p

    def settings(cfg: dict) -> dict:  # a run keyed before a field existed holds it as if at its default
        cfg = key_settings(cfg)
        return {**cfg, "student": {**cfg["student"], "train": {**cfg["student"]["train"], "seed": None}}}

    mine = run.read_manifest()["config"]
    runs, skipped = [(mine["student"]["train"]["seed"], models)], []
    for other in others:
        cfg = other.read_manifest().get("config")
        if not cfg or settings(cfg) != settings(mine):
            skipped.append(str(other.root.relative_to(run.root)))
            continue
        runs.append((cfg["student"]["train"]["seed"], Results.read(other.results_json).models))
    students = [n for n in models if not is_teacher(n) and all(n in m for _, m in runs)]
    accuracy = {n: [m[n].accuracy for _, m in runs] for n in students}
    versus = {}
    for n in (x for x in students if x != "baseline" and "baseline" in accuracy):
        d = np.subtract(accuracy[n], accuracy["baseline"])
        pair = paired_difference(accuracy["baseline"], accuracy[n])
        versus[n] = SeedComparison(pair.difference, pair.p_value, sign_flip_p(d), share_won(d))
    return OverSeeds([s for s, _ in runs], accuracy, {n: mean_interval(a) for n, a in accuracy.items()}, versus,
                     sum(m[n].train_seconds or 0.0 for _, m in runs for n in students), skipped)


def render_over_seeds(o: OverSeeds | None, one_run: bool) -> list[str]:
    """What one seed can say, and where the run has more, what they say together."""
    if o is None or len(o.seeds) < 2:
        return ["", "These tests cover which test rows were drawn, for one training run of each student: not training "
                "randomness (data order, initialisation), which can move a student by as much as a method's gain. "
                "`make train-all SEEDS=3` (`kd train-all --seeds 3`) trains the students at 3 seeds, paired, and "
                "gives the interval over them; `make study` varies the labelled rows too."] if one_run else []
    k = len(o.seeds)
    out = ["", f"## Over training seeds ({k}: {', '.join(map(str, o.seeds))})", "",
           f"Every student trained once per seed (data order and head initialisation; the teacher shared), scored on "
           f"the same test rows: the mean with its 95 % t-interval over seeds, and each against the baseline paired by "
           f"seed (paired t-test; exact sign-flip test, whose smallest p with {k} seeds is {2 / 2 ** k:.2g}). "
           f"Students' training over all seeds: {(o.train_seconds or 0) / 60:.0f} min.", "",
           "| model | accuracy per seed (%) | mean (%) [95 % CI] | − baseline (pt) [95 % CI] | p (t) | p (sign-flip) | "
           "seeds won | |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for n, acc in o.accuracy.items():
        m, v = o.means[n], o.versus_baseline.get(n)
        row = [n, ", ".join(f"{100 * a:.2f}" for a in acc),
               f"{100 * m.mean:.2f} [{100 * m.low:.2f}, {100 * m.high:.2f}]"]
        if v:
            d = v.difference
            verdict = ("**better over seeds**" if d.low > 0 else "**worse over seeds**" if d.high < 0
                       else "noise (the interval includes 0)")
            row += [f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]", f"{v.p_value:.2g}",
                    f"{v.p_permutation:.2g}", f"{v.won:.2f}", verdict]
        else:
            row += ["–"] * 5
        out.append("| " + " | ".join(row) + " |")
    if o.other_settings:
        out += ["", f"Left out, their settings not this run's: {', '.join(o.other_settings)}."]
    return out


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(results: Results) -> str:
    lines = [f"# kd-bench results: preset `{results.preset}`", ""]
    rows = results.data.rows
    pool = rows.student_train - rows.labelled
    budget = ("" if pool == 0 else
              f", of which {rows.labelled} labelled: a teacher that fine-tunes and the baseline train on "
              f"those, the distilled student also on the other {pool} through the teacher alone")
    lines += [f"Data: `{results.data.source}`: {rows.train} train rows (students: {rows.student_train}{budget}), "
              f"{rows.validation} validation rows (model selection), {rows.test} test rows (these numbers).", ""]
    lines += ["| model | accuracy | macro-F1 | weighted-F1 | params | size (MB) | train time (s) | best val. acc. |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.models.items():
        val = m.validation_accuracy
        lines.append(f"| {name} | {100 * m.accuracy:.2f} % | {m.f1_macro:.4f} | {m.f1_weighted:.4f} | "
                     f"{_fmt(m.params, ',')} | {_fmt(m.size_mb, '.1f')} | {_fmt(m.train_seconds, '.0f')} | "
                     f"{_fmt(val and 100 * val, '.2f')} |")
    lines += ["", f"Calibration of the predicted probabilities on the same test rows (lower is better): negative "
              f"log-likelihood (nats per row), expected calibration error ({ECE_BINS} equal-width bins), Brier score.",
              "", "| model | NLL | ECE | Brier |", "|---|---:|---:|---:|"]
    for name, m in results.models.items():
        lines.append(f"| {name} | {_fmt(m.nll, '.4f')} | {_fmt(m.ece, '.4f')} | {_fmt(m.brier, '.4f')} |")
    for name, m in results.models.items():
        if m.teacher_file:
            lines += ["", f"{name} learnt from the soft labels of `{m.teacher_file}` (sha256 "
                      f"{m.teacher_file_sha256}), not from a model of this run."]
        if m.members:
            mean = m.members_mean or {}
            named = zip(m.members, m.member_models or [None] * len(m.members))
            models = ", ".join(f"{n} ({x})" if x else n for n, x in named)
            lines += ["", f"{name} pools {len(m.members)} teachers by the mean of their probabilities: {models}. "
                      f"Pooled: accuracy {100 * m.accuracy:.2f} %, ECE {_fmt(m.ece, '.4f')}, NLL {_fmt(m.nll, '.4f')}; "
                      f"its members' mean: accuracy {100 * mean.get('accuracy', float('nan')):.2f} %, ECE "
                      f"{mean.get('ece', float('nan')):.4f}, NLL {mean.get('nll', float('nan')):.4f}."]
    plans = [f"{name} {b['global_batch']} = {b['world_size']} x {b['per_process_batch']}"
             for name, m in results.models.items() if (b := m.batch)]
    if plans:
        lines += ["", f"Training batches (global = processes x per process): {', '.join(plans)}."]
    names = list(next(iter(results.models.values())).f1_per_class)
    lines += ["", "Per-class F1:", "", "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, m in results.models.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.f1_per_class[c]:.4f}" for c in names) + " |")
    d = results.distillation
    if d:
        t = d.mcnemar
        verdict = "beats" if d.gain_pt > 0 else ("ties" if d.gain_pt == 0 else "does NOT beat")
        sig = "significant" if d.significant else "not significant"
        lines += ["", f"## Distillation (T={d.temperature}, alpha={d.alpha})", "",
                  f"- The distilled student {verdict} the baseline: {d.gain_pt:+.2f} pt accuracy.",
                  f"- McNemar (exact, paired on the test rows): baseline alone right on {t.only_a_right}, "
                  f"distilled alone right on {t.only_b_right}; p = {t.p_value:.3g} ({sig} at 0.05)."]
        if d.gap_closed is not None:
            lines.append(f"- Share of the teacher-baseline gap closed: {100 * d.gap_closed:.0f} %.")
        elif d.distilled_over_teacher is not None:
            lines.append("- The baseline already matches or beats the teacher: there is no gap to close.")
        if d.distilled_over_teacher is not None:
            lines.append(f"- Distilled student reaches {100 * d.distilled_over_teacher:.1f} % of the teacher's "
                         "accuracy.")
    if results.methods:
        lines += ["", f"## Each method against the baseline on these test rows ({len(results.methods)} compared; "
                  "McNemar p Holm-adjusted; one training run each)", "",
                  "| model | method | teacher | gain (pt) | alone right: baseline / it | p | p (Holm) | |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for name, t in results.methods.items():
            m = t.mcnemar
            verdict = ("**better** on these rows" if t.gain_pt > 0 else "**worse** on these rows") \
                if t.significant else "noise"
            lines.append(f"| {name} | {t.method or '–'} | {t.teacher or '–'} | {t.gain_pt:+.2f} | "
                         f"{m.only_a_right} / {m.only_b_right} | {m.p_value:.3g} | {t.p_holm:.3g} | {verdict} |")
    lines += render_over_seeds(results.over_seeds, bool(d or results.methods))
    if results.teacher_label_match:
        lines += ["", f"Teacher labels: {results.teacher_label_match}."]
    return "\n".join(lines) + "\n"


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_confusion(run: RunFolder, results: Results) -> bytes:
    models = results.models
    names = list(next(iter(models.values())).f1_per_class)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        cm = np.asarray(json.loads((run.model_dir(name) / "metrics.json").read_text())["confusion_matrix"])
        share = cm / cm.sum(axis=1, keepdims=True)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [])
        ax.set_title(f"{name} ({100 * models[name].accuracy:.2f} %)")
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    return figure_png(fig)


def plot_losses(run: RunFolder, results: Results) -> bytes:
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in results.models:
        path = run.model_dir(name) / "log_history.json"
        history = json.loads(path.read_text()) if path.is_file() else []
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h]
        evals = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
        if train:
            train_ax.plot(*zip(*train), label=name)
        if evals:
            eval_ax.plot(*zip(*evals), marker="o", label=name)
    train_ax.set_title("training loss (distilled: the KD objective)")
    eval_ax.set_title("validation cross-entropy")
    for ax in (train_ax, eval_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return figure_png(fig)


def write_report(run: RunFolder) -> Results:
    results = build_results(run)
    results.write(run.results_json)
    write_text(run.root / "results.md", render_markdown(results))
    write_bytes(run.root / "confusion_matrices.png", plot_confusion(run, results))
    write_bytes(run.root / "loss_curves.png", plot_losses(run, results))
    print(render_markdown(results))
    return results
