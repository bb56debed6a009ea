"""Trains the benchmark's model once and writes it for every server:
model.joblib (MLServer's scikit-learn runtime), lr.onnx (Citadel, via
skl2onnx) and weights.json (the minimal hyper server in the benchmark).

Usage: python serve_models.py OUT_DIR   (scikit-learn, skl2onnx)
"""
import json
import os
import sys

import joblib
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

out = sys.argv[1]
X, y = make_classification(n_samples=5000, n_features=10, n_informative=6, random_state=1)
X = X.astype(np.float32)
model = LogisticRegression(max_iter=500).fit(X, y)
joblib.dump(model, os.path.join(out, "model.joblib"))
onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
with open(os.path.join(out, "lr.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
with open(os.path.join(out, "weights.json"), "w") as f:
    json.dump({"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]),
               "row": X[0].tolist(), "proba": model.predict_proba(X[:1])[0].tolist()}, f)
print(json.dumps({"ok": True}))
