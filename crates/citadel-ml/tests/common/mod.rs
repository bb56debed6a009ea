//! UCI Adult as a table, for the trainer tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use citadel_ml::Table;

pub fn adult() -> Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/adult/adult.data");
    let text = std::fs::read_to_string(path).unwrap();
    let names = [
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
    let numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"];
    Table::from_unquoted_csv(&text, &names, &numeric, "?").unwrap()
}

pub const FEATURES: [&str; 11] = [
    "age",
    "workclass",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
];
