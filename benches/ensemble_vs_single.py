"""Which model to ship after cross-validation: one network trained on all the images, or the
ensemble of K fold networks? A benchmark (minutes to hours), not a test.

Nested evaluation on a finished `inception cv` folder (the outer cv): for each outer fold, the
fold's own `model.pt` is a single network trained on all of the other folds' images (the
"single" column); an inner `inception cv --folds K` on exactly those images gives K networks on
(K-1)/K of them each, whose ensemble is measured on the same outer validation images (the
"ensemble" column). Both see only images of patients outside the outer fold.

    python3 benches/ensemble_vs_single.py runs/cv [--inner-folds 4] [--bin target/release/inception]

Writes OUTER/nested/ (the inner cv folders and symlinked image folders) and prints one row per
outer fold and the means.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def link_tree(root, entries, dest):
    for e in entries:
        src = os.path.join(root, e["path"])
        dst = os.path.join(dest, e["path"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(src), dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cv")
    ap.add_argument("--inner-folds", type=int, default=4)
    ap.add_argument("--bin", default="target/release/inception")
    a = ap.parse_args()
    plan = json.load(open(os.path.join(a.cv, "plan.json")))
    root, k = plan["dataset"], plan["config"]["folds"]
    config = dict(plan["config"], folds=None, fold=0)
    nested = os.path.join(a.cv, "nested")
    os.makedirs(nested, exist_ok=True)
    cfg_path = os.path.join(nested, "config.json")
    json.dump(config, open(cfg_path, "w"), indent=2)
    rows = []
    for f in range(k):
        fold = os.path.join(a.cv, f"fold-{f}")
        split = json.load(open(os.path.join(fold, "split.json")))
        train_dir = os.path.join(nested, f"outer-{f}-train")
        val_dir = os.path.join(nested, f"outer-{f}-val")
        link_tree(root, split["train"], train_dir)
        link_tree(root, split["val"], val_dir)
        # Class folders without images in the validation side would change the class list.
        for c in {e["class"] for e in split["train"]}:
            os.makedirs(os.path.join(val_dir, c), exist_ok=True)
        inner = os.path.join(nested, f"inner-{f}")
        if os.path.exists(os.path.join(inner, "cv.json")):
            pass
        elif os.path.exists(os.path.join(inner, "plan.json")):
            run([a.bin, "cv", "--resume", inner])
        else:
            run([a.bin, "cv", "--data", train_dir, "--config", cfg_path,
                 "--folds", str(a.inner_folds), "--out", inner])
        measure = lambda ckpt: json.loads(run(
            [a.bin, "eval", "--checkpoint", ckpt, "--data", val_dir, "--json"]))
        single, ensemble = measure(os.path.join(fold, "model.pt")), measure(inner)
        row = (f, single["accuracy"], ensemble["accuracy"],
               single["binary"]["roc_auc"], ensemble["binary"]["roc_auc"])
        rows.append(row)
        print("outer fold %d: single %.3f  ensemble of %d %.3f  (ROC-AUC %.3f vs %.3f)"
              % (f, row[1], a.inner_folds, row[2], row[3], row[4]), flush=True)
    for name, i in [("accuracy", 1), ("ROC-AUC", 3)]:
        s = [r[i] for r in rows]
        e = [r[i + 1] for r in rows]
        print("%s: single %.3f ± %.3f, ensemble %.3f ± %.3f, paired difference %+.3f"
              % (name, statistics.mean(s), statistics.stdev(s), statistics.mean(e),
                 statistics.stdev(e), statistics.mean(e) - statistics.mean(s)))


if __name__ == "__main__":
    main()
