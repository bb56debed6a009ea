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

/// Common words (the datasets' values, Faker's English word list, a hand
/// list): never a name, even beside a listed one.
fn stop() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| set(include_str!("../data/name_stoplist.txt")))
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
    if words.is_empty() || words.len() > 4 || words.iter().any(|w| is_legal_form(w)) {
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
    let (mut names, mut unknown) = (0, 0);
    for w in &words {
        if listed(w) {
            names += 1;
        } else if stop().contains(w.as_str()) {
            return None;
        } else if !(particles().contains(w.as_str()) || w.chars().count() == 1) {
            unknown += 1;
        }
    }
    if names >= 2 && unknown == 0 {
        return Some(NameShape::Full);
    }
    // One word off the lists (no list holds every surname): the value is a
    // name when a listed given name leads it ("Erika Dykes") or follows the
    // comma ("Dykes, Erika"); single letters count as initials, not words.
    let given_at = if v.contains(',') { words.last() } else { words.first() };
    (unknown == 1 && names >= 1 && given_at.is_some_and(|w| given().contains(w.as_str()))).then_some(NameShape::Full)
}

/// Legal forms and words of company names: a value with one is a company,
/// even when named after people ("Naser Bachmann KG", "Bazin et Fils").
const LEGAL_FORMS: &[&str] = &[
    "gmbh", "ag", "kg", "kgaa", "ohg", "ug", "inc", "llc", "ltd", "plc", "corp", "co", "sa", "sas", "sarl", "srl",
    "s.a", "s.a.s", "s.a.r.l", "s.r.l", "spa", "s.p.a", "bv", "nv", "ab", "oy", "group", "holding", "holdings", "sons",
    "fils", "partners", "gbr", "e.v", "e.k",
];

/// Whether `word` is a legal form of a company (any case, trailing dot ignored).
pub(crate) fn is_legal_form(word: &str) -> bool {
    let w = word.trim_end_matches('.').to_lowercase();
    LEGAL_FORMS.contains(&w.as_str())
}

/// Whether `given` is on the given-name list and `surname` on the surname
/// list (any case; a surname's trailing dot ignored).
pub(crate) fn both_listed(given_name: &str, surname: &str) -> bool {
    let s = surname.trim_end_matches('.').to_lowercase();
    is_given(given_name) && !stop().contains(s.as_str()) && surnames().contains(s.as_str())
}

/// Whether `word` (any case) is on the given-name list.
fn is_given(word: &str) -> bool {
    given().contains(word.to_lowercase().as_str())
}
