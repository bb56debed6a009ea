//! The sample-size-aware drift tests against scipy's values
//! (`fixtures/drift_tests_reference.py` writes `drift_tests_reference.json`),
//! and Holm's correction on a hand-checked case.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

use citadel_data::stats::{binom_sf, holm, two_proportion_p};

#[test]
fn binomial_and_two_proportion_tests_equal_scipy() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drift_tests_reference.json"))
            .unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    for c in r["binom_sf"].as_array().unwrap() {
        let got = binom_sf(c["k"].as_u64().unwrap(), c["n"].as_u64().unwrap(), c["p"].as_f64().unwrap());
        let want = c["sf"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want.max(1e-300) + 1e-15, "{c}: {got} != {want}");
    }
    for c in r["two_proportion"].as_array().unwrap() {
        let got = two_proportion_p(
            c["k1"].as_u64().unwrap(),
            c["n1"].as_u64().unwrap(),
            c["k2"].as_u64().unwrap(),
            c["n2"].as_u64().unwrap(),
        );
        let want = c["p"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want.max(1e-300) + 1e-15, "{c}: {got} != {want}");
    }
}

#[test]
fn holm_stops_at_the_first_test_it_keeps() {
    // alpha 0.05 over 4 tests: 0.01 <= 0.0125 rejected, 0.02 <= 0.0167 no: stop.
    assert_eq!(holm(&[0.04, 0.01, 0.02, 0.5], 0.05), vec![false, true, false, false]);
    assert_eq!(holm(&[0.001, 0.01], 0.05), vec![true, true]);
    assert_eq!(holm(&[], 0.05), Vec::<bool>::new());
}
