"""Prints `python -m pipeline.ensemble --json` reports as Markdown tables. The shipped
models' tables come from `fer-pipeline models --per-class`.

    python scripts/results_table.py ENSEMBLE_JSON [...]
"""
import argparse
import json


def tta_label(key: str) -> str:
    """The label of a "<set>_tta" key: ' + flip TTA' for flip_tta and ensemble_flip_tta."""
    return f" + {key[:-len('_tta')].split('ensemble_', 1)[-1]} TTA"


def view_sets(scores: dict) -> list:
    """("single", "") first, then each "<set>_tta" the report scored, in its order."""
    return [("single", "")] + [(key, tta_label(key)) for key in scores if key.endswith("_tta")]


def combined(path: str) -> None:
    report = json.load(open(path))
    print(f"\n{len(report['classes'])} classes, {report['split']}:\n")
    print("| what | accuracy | macro-F1 |")
    print("|---|---|---|")
    for name, scores in report["models"].items():
        for key, label in view_sets(scores):
            print(f"| `{name}`{label} | {scores[key]['accuracy']:.1%} | {scores[key]['macro_f1']:.3f} |")
    for key in [key for key in report if key.startswith("ensemble")]:
        label = "ensemble (mean probabilities)" if key == "ensemble" else "ensemble" + tta_label(key)
        print(f"| {label} | {report[key]['accuracy']:.1%} | {report[key]['macro_f1']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ensembles", nargs="+", help="pipeline.ensemble --json reports")
    args = parser.parse_args()
    for path in args.ensembles:
        combined(path)


if __name__ == "__main__":
    main()
