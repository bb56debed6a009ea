//! Drift statistics against scipy and numpy on real data (UCI Adult train
//! vs test). Reference values: tests/fixtures/drift_reference.json, made by
//! tests/fixtures/make_drift_reference.py (kept beside it).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use citadel_data::checks::{categorical_drift, numeric_drift};
use citadel_data::stats;

const COLUMNS: [&str; 15] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
];
const TOLERANCE: f64 = 1e-9;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap()
}

fn read(name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(repo().join("datasets/adult").join(name))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect()
}

fn column(rows: &[Vec<String>], name: &str) -> Vec<String> {
    let i = COLUMNS.iter().position(|c| *c == name).unwrap();
    rows.iter().map(|r| r[i].clone()).collect()
}

fn counts(values: &[String]) -> Vec<(String, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for v in values {
        *m.entry(v.clone()).or_insert(0u64) += 1;
    }
    m.into_iter().collect()
}

fn close(what: &str, ours: f64, theirs: &serde_json::Value) {
    let theirs = theirs.as_f64().unwrap();
    assert!((ours - theirs).abs() <= TOLERANCE, "{what}: ours {ours:e}, reference {theirs:e}");
}

fn reference() -> serde_json::Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drift_reference.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn numeric_drift_matches_scipy_and_numpy_on_adult() {
    let (train, test, r) = (read("adult.data"), read("adult.test"), reference());
    let numeric = r["numeric"].as_object().unwrap();
    assert_eq!(numeric.len(), 5);
    for (col, want) in numeric {
        let mut a: Vec<f64> = column(&train, col).iter().map(|v| v.parse().unwrap()).collect();
        let mut b: Vec<f64> = column(&test, col).iter().map(|v| v.parse().unwrap()).collect();
        let d = numeric_drift(col, &mut a, &mut b);
        close(&format!("{col} ks"), d.ks.unwrap(), &want["ks"]);
        close(&format!("{col} ks p"), d.ks_pvalue.unwrap(), &want["ks_pvalue_kolmogorov"]);
        close(&format!("{col} psi"), d.psi.unwrap(), &want["psi"]);
        close(&format!("{col} js"), d.js.unwrap(), &want["js"]);
    }
}

#[test]
fn categorical_drift_matches_scipy_and_numpy_on_adult() {
    let (train, test, r) = (read("adult.data"), read("adult.test"), reference());
    let categorical = r["categorical"].as_object().unwrap();
    assert_eq!(categorical.len(), 5);
    for (col, want) in categorical {
        let mut cur = column(&test, col);
        if col == "income" {
            cur.iter_mut().for_each(|v| *v = v.trim_end_matches('.').to_string());
        }
        let d = categorical_drift(col, &counts(&column(&train, col)), &counts(&cur));
        close(&format!("{col} chi2"), d.chi2.unwrap(), &want["chi2"]);
        close(&format!("{col} chi2 p"), d.chi2_pvalue.unwrap(), &want["chi2_pvalue"]);
        close(&format!("{col} psi"), d.psi.unwrap(), &want["psi"]);
        close(&format!("{col} js"), d.js.unwrap(), &want["js"]);
    }
}

#[test]
fn ties_and_small_p_values_match() {
    let r = reference();
    let s = &r["synthetic"];
    let mut a: Vec<f64> = s["a"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let mut b: Vec<f64> = s["b"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let d = numeric_drift("x", &mut a, &mut b);
    close("ks", d.ks.unwrap(), &s["ks"]);
    close("ks p", d.ks_pvalue.unwrap(), &s["ks_pvalue_kolmogorov"]);
    close("psi", d.psi.unwrap(), &s["psi"]);
    close("js", d.js.unwrap(), &s["js"]);
    // The p-value is in the tail here; compare relative error too.
    let want = s["ks_pvalue_kolmogorov"].as_f64().unwrap();
    assert!((d.ks_pvalue.unwrap() - want).abs() / want < 1e-6);
    assert!(stats::kolmogorov_sf(0.0) == 1.0 && stats::kolmogorov_sf(10.0) < 1e-80);
}
