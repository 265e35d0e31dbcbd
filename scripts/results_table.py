"""Prints `python -m pipeline.ensemble --json` reports as Markdown tables. The shipped
models' tables come from `fer-pipeline models --per-class`.

    python scripts/results_table.py ENSEMBLE_JSON [...]
"""
import argparse
import json


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
    parser.add_argument("ensembles", nargs="+", help="pipeline.ensemble --json reports")
    args = parser.parse_args()
    for path in args.ensembles:
        combined(path)


if __name__ == "__main__":
    main()
