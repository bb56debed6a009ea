"""Peers of `citadel-bench monitor`: drift of a live table against a
reference with Evidently's DataDriftPreset and NannyML's univariate drift,
and the exact two-sample KS statistics (scipy) the sketch is checked
against. Reading the CSV files is not timed; each tool's drift is.

    python monitor_peers.py REFERENCE.csv LIVE.csv NUMERIC_COLUMNS CATEGORICAL_COLUMNS

Prints one JSON object: {"exact_ks": {col: D}, "evidently_seconds",
"nannyml_seconds", "evidently_drifted": [...], "nannyml_drifted": [...]}
(or *_error when a tool is missing or fails).
"""
import json
import sys
import time

import pandas as pd
from scipy import stats

ref_path, live_path, numeric, categorical = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
numeric = [c for c in numeric.split(",") if c]
categorical = [c for c in categorical.split(",") if c]
dtypes = {c: "float64" for c in numeric} | {c: str for c in categorical}
reference = pd.read_csv(ref_path, dtype=dtypes)
live = pd.read_csv(live_path, dtype=dtypes)
out = {"reference_rows": len(reference), "live_rows": len(live)}

start = time.perf_counter()
out["exact_ks"] = {c: float(stats.ks_2samp(reference[c].dropna(), live[c].dropna()).statistic) for c in numeric}
out["scipy_ks_seconds"] = time.perf_counter() - start

try:
    try:
        from evidently import Report
        from evidently.presets import DataDriftPreset
        new_api = True
    except ImportError:
        from evidently.metric_preset import DataDriftPreset
        from evidently.report import Report
        new_api = False
    start = time.perf_counter()
    report = Report([DataDriftPreset()])
    if new_api:
        from evidently import DataDefinition, Dataset
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        result = report.run(Dataset.from_pandas(live, data_definition=definition),
                            Dataset.from_pandas(reference, data_definition=definition))
        summary = result.dict()
    else:
        from evidently import ColumnMapping
        report.run(reference_data=reference, current_data=live,
                   column_mapping=ColumnMapping(numerical_features=numeric, categorical_features=categorical))
        summary = report.as_dict()
    out["evidently_seconds"] = time.perf_counter() - start
    drifted = []
    for m in summary.get("metrics", []):
        cfg = m.get("config", {})
        if "ValueDrift" not in cfg.get("type", ""):
            continue
        value, threshold, method = m.get("value"), cfg.get("threshold"), cfg.get("method", "")
        # p-values drift below the threshold, distances at or above it.
        if value is not None and threshold is not None and (value < threshold if "p_value" in method else value >= threshold):
            drifted.append(cfg.get("column"))
    out["evidently_drifted"] = sorted(drifted)
    out["evidently_methods"] = sorted({m.get("config", {}).get("method", "") for m in summary.get("metrics", [])} - {""})
except Exception as e:  # the peer is optional: say why it did not run
    out["evidently_error"] = f"{type(e).__name__}: {e}"

try:
    import nannyml as nml
    start = time.perf_counter()
    calc = nml.UnivariateDriftCalculator(
        column_names=numeric + categorical,
        continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
        categorical_methods=["chi2", "jensen_shannon"],
        # Thresholds come from the spread across reference chunks: ten of them.
        chunk_number=10,
    )
    calc.fit(reference)
    results = calc.calculate(live).filter(period="analysis").to_df()
    out["nannyml_seconds"] = time.perf_counter() - start
    drifted = []
    for col in numeric + categorical:
        alerts = [results[key] for key in results.columns if len(key) == 3 and key[0] == col and key[2] == "alert"]
        # A column drifted when its KS (or chi2) alerts in any live chunk.
        if any(bool(a.any()) for a in alerts[:1]):
            drifted.append(col)
    out["nannyml_drifted"] = drifted
except Exception as e:
    out["nannyml_error"] = f"{type(e).__name__}: {e}"

print(json.dumps(out))
