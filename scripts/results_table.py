"""Prints the Markdown tables of RESULTS.md from the shipped models' metadata.json files
and, if given, `python -m pipeline.ensemble --json` reports.

    python scripts/results_table.py [--models models] [ENSEMBLE_JSON ...]
"""
import argparse
import glob
import json
import os


def shipped(models: str) -> None:
    rows = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(models, "*", "metadata.json")))]
    print("| model | classes | PublicTest accuracy | + flip TTA | macro-F1 | parameters | epochs | training time, machine |")
    print("|---|---|---|---|---|---|---|---|")
    for m in rows:
        t, tta = m.get("training") or {}, m.get("publictest_flip_tta") or {}
        print(f"| `{m['name']}` | {len(m['classes'])} | {m['metrics_publictest']['accuracy']:.1%} | "
              f"{tta.get('accuracy', float('nan')):.1%} | {m['metrics_publictest']['macro_f1']:.3f} | "
              f"{t.get('parameters', 0):,} | {t.get('epochs_run')} | "
              f"{(t.get('training_seconds') or 0) / 60:.0f} min, {t.get('machine')} |")
    for m in rows:
        print(f"\n`{m['name']}` on PublicTest ({m['metrics_publictest']['examples']} faces):\n")
        per_class(m["metrics_publictest"]["per_class"])


def per_class(scores: dict) -> None:
    print("| emotion | precision | recall | F1 | support |")
    print("|---|---|---|---|---|")
    for name, v in scores.items():
        print(f"| {name} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |")


def combined(path: str) -> None:
    report = json.load(open(path))
    print(f"\n{len(report['classes'])} classes, {report['split']}:\n")
    print("| what | accuracy | macro-F1 |")
    print("|---|---|---|")
    for name, scores in report["models"].items():
        for key, label in (("single", ""), ("flip_tta", " + flip TTA")):
            print(f"| `{name}`{label} | {scores[key]['accuracy']:.1%} | {scores[key]['macro_f1']:.3f} |")
    for key, label in (("ensemble", "ensemble (mean probabilities)"),
                       ("ensemble_flip_tta", "ensemble + flip TTA")):
        if key in report:
            print(f"| {label} | {report[key]['accuracy']:.1%} | {report[key]['macro_f1']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("ensembles", nargs="*", help="pipeline.ensemble --json reports")
    args = parser.parse_args()
    shipped(args.models)
    for path in args.ensembles:
        combined(path)


if __name__ == "__main__":
    main()
