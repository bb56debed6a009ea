//! Person names by value, in any case: given-name and surname lists for
//! several languages (`data/`, written by `data/make_names.py` from Faker's
//! locale data, MIT), minus a stop list of ordinary words and every
//! categorical value of UCI Adult and German Credit (so real tables do not
//! read as names).

use std::collections::HashSet;
use std::sync::OnceLock;

fn set(text: &'static str) -> HashSet<&'static str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

fn given() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| set(include_str!("../data/given_names.txt")))
}

fn surnames() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| set(include_str!("../data/surnames.txt")))
}

fn particles() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| set(include_str!("../data/name_particles.txt")))
}

/// What a value looks like as a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameShape {
    /// One word on the given-name list.
    Given,
    /// One word on the surname list.
    Surname,
    /// Two to four words, each a name, a particle or an initial, with at
    /// least two listed names.
    Full,
}

/// The value's shape as a person's name, if it has one.
pub fn name_shape(v: &str) -> Option<NameShape> {
    let v = v.trim();
    if v.is_empty() || v.len() > 80 || v.bytes().any(|b| b.is_ascii_digit() || b == b'@') {
        return None;
    }
    let words: Vec<String> = v
        .split([' ', '\t', ','])
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '"').to_lowercase())
        .collect();
    if words.is_empty() || words.len() > 4 {
        return None;
    }
    if !words.iter().all(|w| w.chars().all(|c| c.is_alphabetic() || c == '-' || c == '\'')) {
        return None;
    }
    let listed = |w: &str| {
        given().contains(w)
            || surnames().contains(w)
            || (w.contains('-') && w.split('-').all(|p| given().contains(p) || surnames().contains(p)))
    };
    if words.len() == 1 {
        let w = words[0].as_str();
        return if given().contains(w) {
            Some(NameShape::Given)
        } else if surnames().contains(w) {
            Some(NameShape::Surname)
        } else {
            None
        };
    }
    let mut names = 0;
    for w in &words {
        if listed(w) {
            names += 1;
        } else if !(particles().contains(w.as_str()) || w.chars().count() == 1) {
            return None;
        }
    }
    (names >= 2).then_some(NameShape::Full)
}
