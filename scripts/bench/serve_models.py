"""Trains the benchmark's models once and writes them for every server:
model.joblib and gbt.joblib (MLServer's scikit-learn runtime), lr.onnx and
gbt.onnx (Citadel, via skl2onnx; the boosting model as one ONNX-ML tree
ensemble) and weights.json (the minimal hyper server in the benchmark).

Usage: python serve_models.py OUT_DIR   (scikit-learn, skl2onnx)
"""
import json
import os
import sys

import joblib
import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

# skl2onnx 1.20 passes HistGradientBoosting's missing-value flags as bools,
# which onnx refuses in an `ints` attribute; the values are 0/1 flags (as in
# crates/citadel-infer/tests/fixtures/make_onnx_reference.py).
_make_attribute = onnx.helper.make_attribute


def _make_attribute_bools_as_ints(key, value, *args, **kwargs):
    if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
        value = [int(v) for v in value]
    return _make_attribute(key, value, *args, **kwargs)


onnx.helper.make_attribute = _make_attribute_bools_as_ints

out = sys.argv[1]
X, y = make_classification(n_samples=5000, n_features=10, n_informative=6, random_state=1)
X = X.astype(np.float32)
model = LogisticRegression(max_iter=500).fit(X, y)
joblib.dump(model, os.path.join(out, "model.joblib"))
onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
with open(os.path.join(out, "lr.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
# 100 trees of up to 31 leaves: scikit-learn's defaults.
gbt = HistGradientBoostingClassifier(random_state=1).fit(X, y)
joblib.dump(gbt, os.path.join(out, "gbt.joblib"))
onx = to_onnx(gbt, X[:1], options={id(gbt): {"zipmap": False}})
with open(os.path.join(out, "gbt.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
with open(os.path.join(out, "weights.json"), "w") as f:
    json.dump({"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]),
               "row": X[0].tolist(), "proba": model.predict_proba(X[:1])[0].tolist()}, f)
print(json.dumps({"ok": True}))
