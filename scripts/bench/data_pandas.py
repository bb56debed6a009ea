"""The Python side of `citadel-bench data`: the same work with pandas + scipy
(and Evidently's DataDriftPreset when it is installed).

    python data_pandas.py ingest TABLE.csv OUT.parquet
    python data_pandas.py drift A.parquet B.parquet [--evidently]

ingest: read, profile (nulls, distinct, min/max/mean/std, quantiles,
histogram, top values), check the expectations citadel checks (ranges,
allowed sets, regex, uniqueness, null rates), scan string columns for PII
with regular expressions, mask (HMAC-SHA256 pseudonyms, redaction, zip
truncation), count duplicate rows, write Parquet (zstd).
drift: per column, KS (scipy.stats.ks_2samp), PSI on reference deciles and
JS distance for numbers; chi-square (scipy.stats.chisquare), PSI and JS for
categories.
Prints one JSON line with what it found, so the run can be checked.
"""
import hashlib
import hmac
import json
import sys
import time

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

KEY = b"k" * 32
PII = {
    "email": r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}",
    "phone": r"\+\d[\d \-()]{7,}",
    "card": r"\b(?:\d[ -]?){13,19}\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "ip": r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
}
CATS = {"cat_0": [f"a{i}" for i in range(5)], "cat_1": [f"b{i}" for i in range(12)], "label": ["yes", "no"]}


def ingest(csv, out):
    df = pd.read_csv(csv)
    profile = {}
    for c in df.columns:
        s = df[c]
        p = {"nulls": int(s.isna().sum()), "distinct": int(s.nunique())}
        if pd.api.types.is_numeric_dtype(s):
            v = s.dropna()
            p.update(min=float(v.min()), max=float(v.max()), mean=float(v.mean()), std=float(v.std()),
                     quantiles=v.quantile([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]).tolist(),
                     histogram=np.histogram(v, bins=20)[0].tolist())
        else:
            p["top"] = s.value_counts().head(10).to_dict()
        profile[c] = p
    violations = {
        "age_range": int(((df["age"] < 18) | (df["age"] > 90)).sum()),
        "num_0_range": int(((df["num_0"] < -100) | (df["num_0"] > 100)).sum()),
        "id_unique": int(df["id"].duplicated().sum()),
        "email_regex": int((~df["email"].str.fullmatch(r"[^@\s]+@[^@\s]+")).sum()),
        "label_null_rate": float(df["label"].isna().mean()),
    }
    for c, allowed in CATS.items():
        violations[c + "_allowed"] = int((~df[c].isin(allowed) & df[c].notna()).sum())
    pii = {}
    for c in df.columns:
        if pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object:
            s = df[c].dropna().astype(str)
            for kind, rx in PII.items():
                share = float(s.str.contains(rx, regex=True).mean())
                if share > 0.01:
                    pii[c] = kind
    df["email"] = df["email"].map(lambda v: "ps_" + hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest()[:32])
    df["phone"] = df["phone"].map(lambda v: "ps_" + hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest()[:32])
    df["name"] = "[REDACTED]"
    df["zip"] = df["zip"].astype(str).str[:2] + "***"
    duplicates = float(pd.util.hash_pandas_object(df, index=False).duplicated().mean())
    df.to_parquet(out, compression="zstd")
    return {"rows": len(df), "pii": pii, "violations": violations, "duplicates": duplicates,
            "profiled": len(profile)}


def psi(r, c, eps=1e-4):
    r = np.maximum(r / r.sum(), eps)
    c = np.maximum(c / c.sum(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def drift(a_path, b_path, evidently):
    a, b = pd.read_parquet(a_path), pd.read_parquet(b_path)
    out = {}
    for col in a.columns:
        if col not in b.columns:
            continue
        x, y = a[col].dropna(), b[col].dropna()
        if pd.api.types.is_numeric_dtype(x):
            ks = stats.ks_2samp(x, y)
            edges = np.unique(np.quantile(x, np.linspace(0, 1, 11))[1:-1])
            r = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1).astype(float)
            c = np.bincount(np.searchsorted(edges, y, side="right"), minlength=len(edges) + 1).astype(float)
            out[col] = {"ks": float(ks.statistic), "psi": psi(r, c), "js": float(distance.jensenshannon(r, c, base=2))}
        else:
            cats = sorted(set(x.unique()) | set(y.unique()))
            if len(cats) > 1000:
                continue
            r = x.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=float)
            c = y.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=float)
            expected = (r + 0.5) / (r.sum() + 0.5 * len(cats)) * c.sum()
            chi = stats.chisquare(c, expected)
            out[col] = {"chi2": float(chi.statistic), "psi": psi(r, c), "js": float(distance.jensenshannon(r, c, base=2))}
    result = {"columns": len(out), "drift": out}
    if evidently:
        start = time.perf_counter()
        try:
            try:
                from evidently import Report
                from evidently.presets import DataDriftPreset
                Report([DataDriftPreset()]).run(reference_data=a, current_data=b)
            except ImportError:
                from evidently.metric_preset import DataDriftPreset
                from evidently.report import Report
                Report(metrics=[DataDriftPreset()]).run(reference_data=a, current_data=b)
            result["evidently_seconds"] = time.perf_counter() - start
        except Exception as e:  # not installed, or an API it does not know
            result["evidently_error"] = f"{type(e).__name__}: {e}"
    return result


def main():
    start = time.perf_counter()
    if sys.argv[1] == "ingest":
        result = ingest(sys.argv[2], sys.argv[3])
    else:
        result = drift(sys.argv[2], sys.argv[3], "--evidently" in sys.argv)
    result["seconds_inside"] = time.perf_counter() - start
    print(json.dumps(result))


main()
