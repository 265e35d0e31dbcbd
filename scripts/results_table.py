"""Prints the Markdown tables of RESULTS.md from the shipped models' metadata.json files.

    python scripts/results_table.py [models]
"""
import glob
import json
import os
import sys


def main(models: str = "models") -> None:
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
        print("| emotion | precision | recall | F1 | support |")
        print("|---|---|---|---|---|")
        for name, v in m["metrics_publictest"]["per_class"].items():
            print(f"| {name} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
