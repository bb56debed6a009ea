//! UCI Adult as a table, for the trainer tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use citadel_ml::{Column, Table};

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
    let numeric = [0, 2, 4, 10, 11, 12];
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        for (k, v) in line.split(',').enumerate() {
            cols[k].push(v.trim().to_string());
        }
    }
    let mut t = Table::default();
    for (k, name) in names.iter().enumerate() {
        let c = if numeric.contains(&k) {
            Column::Num(cols[k].iter().map(|v| v.parse().ok()).collect())
        } else {
            Column::Cat(cols[k].iter().map(|v| if v == "?" { None } else { Some(v.clone()) }).collect())
        };
        t.push_column(name, c).unwrap();
    }
    t
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
