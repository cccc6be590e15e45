"""Write scikit-learn's bundled breast-cancer table (Wisconsin diagnostic, 569 rows, 30 numeric
features, binary target) as a CSV: the "small table" of issue 13, where a one-shot release has
~455 training rows to work with. The file ships with scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer


def main(out: str) -> None:
    frame = load_breast_cancer(as_frame=True).frame  # 569 × (30 features + target)
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)  # never a half-written file at `out`
    print(f"{len(frame)} rows → {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/small_table/make_csv.py OUT.csv")
    main(sys.argv[1])
