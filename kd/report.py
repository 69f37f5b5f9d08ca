"""The comparison of a run's models: results.json, results.md and two plots."""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kd.errors import KdError  # noqa: E402
from kd.metrics import ECE_BINS, gap_closed, holm, mcnemar  # noqa: E402
from kd.runfolder import RunFolder, write_bytes, write_json, write_text  # noqa: E402

ROW_FIELDS = ("accuracy", "f1_macro", "f1_weighted", "nll", "ece", "brier", "params", "size_mb", "train_seconds",
              "validation_accuracy", "f1_per_class", "test_rows", "batch", "method", "teacher", "procedure_seconds")


def load_models(run: RunFolder) -> dict[str, dict]:
    models = {}
    for name in run.model_names():
        models[name] = json.loads((run.model_dir(name) / "metrics.json").read_text())
    if not models:
        raise KdError(f"{run.root}: no trained models in models/; run `kd train-all` first")
    return models


def build_results(run: RunFolder) -> dict:
    manifest = run.read_manifest()
    models = load_models(run)
    results = {
        "preset": manifest.get("config", {}).get("preset"),
        "device": manifest.get("device", {}),
        "data": manifest.get("data", {}),
        "models": {name: {k: m.get(k) for k in ROW_FIELDS} for name, m in models.items()},
    }
    if "teacher" in models:
        results["teacher_label_match"] = models["teacher"].get("label_match")
    results["methods"] = method_tests(run, models)
    if {"baseline", "distilled"} <= models.keys():
        test = results["methods"]["distilled"]["mcnemar"]  # the unadjusted test, as this section always gave it
        acc = {n: m["accuracy"] for n, m in models.items()}
        d = models["distilled"]
        results["distillation"] = {
            "temperature": d.get("temperature"),
            "alpha": d.get("alpha"),
            "gain_pt": 100 * (acc["distilled"] - acc["baseline"]),
            "gap_closed": gap_closed(acc["teacher"], acc["baseline"], acc["distilled"]) if "teacher" in acc else None,
            "distilled_over_teacher": acc["distilled"] / acc["teacher"] if "teacher" in acc else None,
            "mcnemar_baseline_vs_distilled": test,
            "significant_at_0.05": test["p_value"] < 0.05,
        }
    return results


def method_tests(run: RunFolder, models: dict[str, dict]) -> dict[str, dict]:
    """Each student of a method against the baseline on the test rows: the accuracy gain and an exact McNemar test,
    Holm-adjusted for the number of methods compared (a run of many methods would otherwise find a "significant"
    one by chance)."""
    others = [n for n in models if n != "baseline" and not n.startswith("teacher")]
    if "baseline" not in models or not others:
        return {}
    labels = np.load(run.root / "test_labels.npy")
    base = np.load(run.model_dir("baseline") / "test_logits.npy").argmax(-1)
    tests = {n: mcnemar(labels, base, np.load(run.model_dir(n) / "test_logits.npy").argmax(-1)) for n in others}
    adjusted = holm(t["p_value"] for t in tests.values())
    return {n: {"method": models[n].get("method"), "teacher": models[n].get("teacher"),
                "gain_pt": 100 * (models[n]["accuracy"] - models["baseline"]["accuracy"]), "mcnemar": t,
                "p_holm": p, "significant_at_0.05": p < 0.05, "compared": len(others)}
            for (n, t), p in zip(tests.items(), adjusted)}


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(results: dict) -> str:
    lines = [f"# kd-bench results: preset `{results['preset']}`", ""]
    rows = results.get("data", {}).get("rows", {})
    if rows:
        pool = (rows.get("student_train") or 0) - (rows.get("labelled") or 0)
        budget = ("" if rows.get("labelled") is None or pool == 0 else
                  f", of which {rows['labelled']} labelled: a teacher that fine-tunes and the baseline train on "
                  f"those, the distilled student also on the other {pool} through the teacher alone")
        lines += [f"Data: `{results['data'].get('source')}`: {rows.get('train')} train rows (students: "
                  f"{rows.get('student_train')}{budget}), {rows.get('validation')} validation rows (model selection), "
                  f"{rows.get('test')} test rows (these numbers).", ""]
    lines += ["| model | accuracy | macro-F1 | weighted-F1 | params | size (MB) | train time (s) | best val. acc. |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results["models"].items():
        val = m.get("validation_accuracy")
        lines.append(f"| {name} | {100 * m['accuracy']:.2f} % | {m['f1_macro']:.4f} | {m['f1_weighted']:.4f} | "
                     f"{m['params']:,} | {_fmt(m['size_mb'], '.1f')} | {_fmt(m['train_seconds'], '.0f')} | "
                     f"{_fmt(val and 100 * val, '.2f')} |")
    lines += ["", f"Calibration of the predicted probabilities on the same test rows (lower is better): negative "
              f"log-likelihood (nats per row), expected calibration error ({ECE_BINS} equal-width bins), Brier score.",
              "", "| model | NLL | ECE | Brier |", "|---|---:|---:|---:|"]
    for name, m in results["models"].items():
        lines.append(f"| {name} | {_fmt(m.get('nll'), '.4f')} | {_fmt(m.get('ece'), '.4f')} | "
                     f"{_fmt(m.get('brier'), '.4f')} |")
    plans = [f"{name} {b['global_batch']} = {b['world_size']} x {b['per_process_batch']}"
             for name, m in results["models"].items() if (b := m.get("batch"))]
    if plans:
        lines += ["", f"Training batches (global = processes x per process): {', '.join(plans)}."]
    names = list(next(iter(results["models"].values()))["f1_per_class"])
    lines += ["", "Per-class F1:", "", "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, m in results["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m['f1_per_class'][c]:.4f}" for c in names) + " |")
    d = results.get("distillation")
    if d:
        t = d["mcnemar_baseline_vs_distilled"]
        verdict = "beats" if d["gain_pt"] > 0 else ("ties" if d["gain_pt"] == 0 else "does NOT beat")
        sig = "significant" if d["significant_at_0.05"] else "not significant"
        lines += ["", f"## Distillation (T={d['temperature']}, alpha={d['alpha']})", "",
                  f"- The distilled student {verdict} the baseline: {d['gain_pt']:+.2f} pt accuracy.",
                  f"- McNemar (exact, paired on the test rows): baseline alone right on {t['only_a_right']}, "
                  f"distilled alone right on {t['only_b_right']}; p = {t['p_value']:.3g} ({sig} at 0.05)."]
        if d["gap_closed"] is not None:
            lines.append(f"- Share of the teacher-baseline gap closed: {100 * d['gap_closed']:.0f} %.")
        elif d["distilled_over_teacher"] is not None:
            lines.append("- The baseline already matches or beats the teacher: there is no gap to close.")
        if d["distilled_over_teacher"] is not None:
            lines.append(f"- Distilled student reaches {100 * d['distilled_over_teacher']:.1f} % of the teacher's "
                         "accuracy.")
    tests = results.get("methods") or {}
    if tests:
        lines += ["", f"## Each method against the baseline ({len(tests)} compared; McNemar p Holm-adjusted)", "",
                  "| model | method | teacher | gain (pt) | alone right: baseline / it | p | p (Holm) | |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for name, t in tests.items():
            m = t["mcnemar"]
            verdict = ("**better**" if t["gain_pt"] > 0 else "**worse**") if t["significant_at_0.05"] else "noise"
            lines.append(f"| {name} | {t['method'] or '–'} | {t['teacher'] or '–'} | {t['gain_pt']:+.2f} | "
                         f"{m['only_a_right']} / {m['only_b_right']} | {m['p_value']:.3g} | {t['p_holm']:.3g} | "
                         f"{verdict} |")
    if results.get("teacher_label_match"):
        lines += ["", f"Teacher labels: {results['teacher_label_match']}."]
    return "\n".join(lines) + "\n"


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_confusion(run: RunFolder, results: dict) -> bytes:
    models = results["models"]
    names = list(next(iter(models.values()))["f1_per_class"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        cm = np.asarray(json.loads((run.model_dir(name) / "metrics.json").read_text())["confusion_matrix"])
        share = cm / cm.sum(axis=1, keepdims=True)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [])
        ax.set_title(f"{name} ({100 * models[name]['accuracy']:.2f} %)")
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    return figure_png(fig)


def plot_losses(run: RunFolder, results: dict) -> bytes:
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in results["models"]:
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


def write_report(run: RunFolder) -> dict:
    results = build_results(run)
    write_json(run.results_json, results)
    write_text(run.root / "results.md", render_markdown(results))
    write_bytes(run.root / "confusion_matrices.png", plot_confusion(run, results))
    write_bytes(run.root / "loss_curves.png", plot_losses(run, results))
    print(render_markdown(results))
    return results
