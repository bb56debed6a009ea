"""scikit-learn on the same encoded Adult split as `citadel-bench pipeline`.

Reads train.csv / test.csv (features as Citadel encodes them: numbers, and
category codes; last column the 0/1 label) and meta.json (which columns are
categorical) from the directory in argv[1]. Trains, as a user would:
- LogisticRegression (defaults: lbfgs, C=1, max_iter=100) after
  StandardScaler on numbers and OneHotEncoder on categories;
- HistGradientBoostingClassifier (defaults) on the codes;
- LightGBM's LGBMClassifier (defaults, the category columns declared as
  categorical) when lightgbm is importable: the peer for served tree models.
Prints JSON: per model the fit time, the predict time, accuracy and ROC AUC;
for LightGBM also the median time of one single-row predict (of 1000).
"""
import json
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

warnings.filterwarnings("ignore")
d = sys.argv[1]
meta = json.load(open(d + "/meta.json"))
tr = np.loadtxt(d + "/train.csv", delimiter=",", dtype=np.float64)
te = np.loadtxt(d + "/test.csv", delimiter=",", dtype=np.float64)
Xtr, ytr, Xte, yte = tr[:, :-1], tr[:, -1].astype(int), te[:, :-1], te[:, -1].astype(int)
cat = meta["categorical"]
num = [j for j in range(Xtr.shape[1]) if j not in cat]
models = {
    "logistic_regression": make_pipeline(
        ColumnTransformer([("n", StandardScaler(), num), ("c", OneHotEncoder(handle_unknown="ignore"), cat)]),
        LogisticRegression(),
    ),
    "gradient_boosting": HistGradientBoostingClassifier(),
}
out = {"scikit-learn": sklearn.__version__}
for name, m in models.items():
    fits = []
    for _ in range(int(meta.get("repeats", 3))):
        t = time.perf_counter()
        m.fit(Xtr, ytr)
        fits.append(time.perf_counter() - t)
    predicts = []
    for _ in range(5):  # best of 5, as the Rust side times its predictions
        t = time.perf_counter()
        p = m.predict_proba(Xte)[:, 1]
        predicts.append(time.perf_counter() - t)
    predict = min(predicts)
    out[name] = {"fit_seconds": min(fits), "predict_seconds": predict,
                 "accuracy": accuracy_score(yte, p > 0.5), "roc_auc": roc_auc_score(yte, p)}
try:
    import lightgbm

    m = lightgbm.LGBMClassifier(verbose=-1)
    fits = []
    for _ in range(int(meta.get("repeats", 3))):
        t = time.perf_counter()
        m.fit(Xtr, ytr, categorical_feature=cat)
        fits.append(time.perf_counter() - t)
    predicts = []
    for _ in range(5):
        t = time.perf_counter()
        p = m.predict_proba(Xte)[:, 1]
        predicts.append(time.perf_counter() - t)
    predict = min(predicts)
    singles = []
    for i in range(min(1000, len(Xte))):
        row = Xte[i : i + 1]
        t = time.perf_counter()
        m.predict_proba(row)
        singles.append(time.perf_counter() - t)
    singles.sort()
    out["lightgbm"] = {"fit_seconds": min(fits), "predict_seconds": predict,
                       "accuracy": accuracy_score(yte, p > 0.5), "roc_auc": roc_auc_score(yte, p),
                       "single_row_micros": singles[len(singles) // 2] * 1e6,
                       "version": lightgbm.__version__}
except ImportError:
    pass
print(json.dumps(out))
