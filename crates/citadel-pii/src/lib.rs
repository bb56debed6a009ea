//! PII detection for tabular data.
//!
//! Each detector is a structural rule plus, where the format has one, its
//! checksum: payment cards (Luhn), IBAN (ISO 13616 mod-97), US SSN (SSA
//! allocation rules), France's NIR (its key), e-mail, international phone
//! numbers (E.164 shape) and national ones (validated by `phonenumber`, a
//! libphonenumber port, against common regions' numbering plans), IPv4/IPv6
//! (std parsers), and the HIPAA Safe Harbor identifiers that values can show
//! (`hipaa.rs`: MRNs, Medicare MBIs, DEA numbers, IMEIs, MACs, URLs). Person names are found by value in any case, from
//! given-name and surname lists of several languages (`data/`); birth dates
//! by their values (adults' dates spread over decades) or a header. Header
//! hints in eight languages add kinds values alone cannot show. Results
//! carry counts and rule names, never the values.
//!
//! Free text is searched too: tokens, runs of digit groups (card numbers and
//! IBANs written with spaces) and identifiers glued to a word
//! (`ssn:123-45-6789`, `call+49…`) are checked with the same rules, reported
//! as `…-in-text`; one checksummed or strictly structured identifier is
//! enough to make a column personal data. Recall and precision per kind are
//! measured in `tests/labelled.rs`.

mod hipaa;
mod names;
mod phone;

pub use names::{NameShape, name_shape};
pub use phone::is_national_phone;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PiiKind {
    Email,
    Phone,
    PaymentCard,
    Iban,
    UsSsn,
    IpAddress,
    DateOfBirth,
    PersonName,
    PostalAddress,
    /// A national identity number other than the US SSN (France's NIR, by its key).
    NationalId,
    /// HIPAA Safe Harbor identifiers.
    MedicalRecordNumber,
    HealthPlanNumber,
    AccountNumber,
    LicenceNumber,
    DeviceId,
    Url,
}

/// Detections in one value: each kind with the rule that matched.
pub fn detect_value(value: &str) -> Vec<(PiiKind, &'static str)> {
    let v = value.trim();
    let mut out = Vec::new();
    if v.is_empty() || v.len() > 512 {
        return out;
    }
    // Each rule first checks the one byte its format must start with, so
    // ordinary values (most of a table) cost a few comparisons.
    let first = v.as_bytes()[0];
    if v.contains('@') && is_email(v) {
        out.push((PiiKind::Email, "email-syntax"));
    }
    let digit = first.is_ascii_digit();
    if digit && is_payment_card(v) {
        out.push((PiiKind::PaymentCard, "card-luhn"));
    } else if digit && is_us_ssn(v) {
        out.push((PiiKind::UsSsn, "ssn-structure"));
    } else if (first == b'+' || first == b'0') && is_phone(v) {
        out.push((PiiKind::Phone, "phone-e164-shape"));
    } else if (digit || first == b'(') && !is_date(v) && phone::is_national_phone(v) {
        out.push((PiiKind::Phone, "phone-national"));
    }
    if is_iban(v) {
        out.push((PiiKind::Iban, "iban-mod97"));
    }
    if v.len() >= 8 {
        if (first == b'M' || first == b'm') && hipaa::is_mrn(v) {
            out.push((PiiKind::MedicalRecordNumber, "mrn-prefix"));
        } else if digit && hipaa::is_medicare_mbi(v) {
            out.push((PiiKind::HealthPlanNumber, "medicare-mbi"));
        } else if first.is_ascii_alphabetic() && hipaa::is_dea(v) {
            out.push((PiiKind::LicenceNumber, "dea-checksum"));
        } else if digit && out.is_empty() && hipaa::is_imei(v) {
            out.push((PiiKind::DeviceId, "imei-luhn"));
        } else if first.is_ascii_hexdigit() && hipaa::is_mac(v) {
            out.push((PiiKind::DeviceId, "mac-address"));
        } else if (first == b'h' || first == b'H') && hipaa::is_url(v) {
            out.push((PiiKind::Url, "url"));
        }
    }
    if digit && is_fr_nir(v) {
        out.retain(|(k, _)| *k != PiiKind::PaymentCard);
        out.push((PiiKind::NationalId, "fr-nir-key"));
    }
    if (first.is_ascii_hexdigit() || first == b':') && v.contains(['.', ':']) && v.parse::<std::net::IpAddr>().is_ok() {
        out.push((PiiKind::IpAddress, "ip-parse"));
    }
    out
}

/// Detections in a value that may be free text: whole-value rules first,
/// then each token and run of tokens (`…-in-text` rules). Bounded: only the
/// first 4 KiB of a value are searched.
pub fn detect(value: &str) -> Vec<(PiiKind, &'static str)> {
    let whole = detect_value(value);
    if !whole.is_empty() {
        return whole;
    }
    let v = value.trim();
    let mut out = Vec::new();
    if v.len() >= 4 && v.len() <= 512 && is_address(v) {
        out.push((PiiKind::PostalAddress, "address-shape"));
    }
    if !v.contains(char::is_whitespace) {
        if out.is_empty() && name_shape(v).is_some() {
            out.push((PiiKind::PersonName, "name-list"));
        }
        if out.is_empty() {
            out.extend(glued(v));
        }
        return out;
    }
    if name_shape(v) == Some(NameShape::Full) {
        out.push((PiiKind::PersonName, "name-list"));
        return out;
    }
    let mut end = v.len().min(4096);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    let tokens: Vec<&str> = v[..end]
        .split(char::is_whitespace)
        .map(|t| {
            t.trim_matches(|c: char| matches!(c, ',' | ';' | ':' | '(' | ')' | '<' | '>' | '"' | '\'' | '[' | ']'))
        })
        .filter(|t| !t.is_empty())
        .collect();
    let in_address = out.iter().any(|(k, _)| *k == PiiKind::PostalAddress);
    let mut push = |k: PiiKind, rule: &'static str| {
        if !out.iter().any(|(x, _)| *x == k) {
            out.push((k, rule));
        }
    };
    for (i, t) in tokens.iter().enumerate() {
        let t = t.trim_end_matches('.');
        for (k, rule) in glued(t) {
            push(k, rule);
        }
        if is_email(t) {
            push(PiiKind::Email, "email-in-text");
        }
        if is_us_ssn(t) && t.contains('-') {
            push(PiiKind::UsSsn, "ssn-in-text");
        }
        if t.contains(['.', ':']) && t.parse::<std::net::IpAddr>().is_ok() && t.len() >= 7 {
            push(PiiKind::IpAddress, "ip-in-text");
        }
        if t.starts_with('+') {
            // "+44 20 7946 0958": join the following digit groups.
            let mut joined = t.to_string();
            for next in tokens.iter().skip(i + 1).take(5) {
                if joined.len() > 20 || !next.bytes().all(|b| b.is_ascii_digit() || b"-().".contains(&b)) {
                    break;
                }
                joined.push(' ');
                joined.push_str(next);
                if is_phone(&joined) && joined.bytes().filter(u8::is_ascii_digit).count() >= 10 {
                    push(PiiKind::Phone, "phone-in-text");
                }
            }
            if is_phone(t) {
                push(PiiKind::Phone, "phone-in-text");
            }
        } else if t.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && !tokens.get(i.wrapping_sub(1)).is_some_and(|p| phone_group(p) || iban_start(p))
        {
            // National formats: "(713) 214-6022", "020 7946 0958". Only at
            // the start of a run of digit groups, once the run has ten
            // digits, and not when the run is a card number or an SSN; the
            // run must have separators (a bare ten-digit run may be any id).
            let run: Vec<&str> = tokens[i..].iter().take(6).take_while(|g| phone_group(g)).copied().collect();
            // More digits than any national number: a card, an account, an id.
            let run_digits: usize = run.iter().map(|g| g.bytes().filter(u8::is_ascii_digit).count()).sum();
            let run = if run_digits > 13 { &[][..] } else { &run[..run.len().min(4)] };
            let mut joined = String::new();
            for g in run {
                if !joined.is_empty() {
                    joined.push(' ');
                }
                joined.push_str(g);
                let digits = joined.bytes().filter(u8::is_ascii_digit).count();
                if digits > 13 || is_payment_card(&joined) || is_us_ssn(&joined) {
                    break;
                }
                // A phone's layout, not any digit groups ("Amount 1200 3400 5600"):
                // dashes, dots or slashes, a trunk 0, or the 3-3-4 of North America.
                let groups: Vec<usize> = joined.split(' ').map(str::len).collect();
                let laid_out = joined.contains(['-', '.', '/']) || joined.starts_with('0') || groups == [3, 3, 4];
                if digits >= 10
                    && laid_out
                    && joined.len() > digits
                    && !is_date(&joined)
                    && phone::is_national_phone(&joined)
                {
                    push(PiiKind::Phone, "phone-in-text");
                    break;
                }
            }
        }
        if (t.starts_with("http") || t.starts_with("HTTP")) && hipaa::is_url(t) {
            push(PiiKind::Url, "url-in-text");
        }
        // "Spoke with Erika Smith": a listed given name and a listed surname,
        // both capitalised. Stricter than a whole value: in prose a given
        // name before any word ("Grace Period", "Max Load") is common, and
        // lower-case pairs ("will price") cannot be judged without a
        // language model. Not inside an address ("168 Christine Meadow", "chemin Marthe
        // Tanguy": after a house number or a street type, or in a value
        // read as an address), across a comma ("Jones, Cox and Clark") or in
        // a company's name ("Gotthard Krebs GmbH"). The cheap tests first:
        // this runs for every token.
        let capital = |w: &str| w.chars().next().is_some_and(char::is_uppercase);
        if let Some(next) = tokens.get(i + 1).map(|n| n.trim_end_matches('.'))
            && capital(t)
            && capital(next)
            && !in_address
            && names::both_listed(t, next)
            && !tokens.get(i.wrapping_sub(1)).is_some_and(|p| {
                p.bytes().all(|b| b.is_ascii_digit()) || STREET_LEADS.contains(&p.to_lowercase().as_str())
            })
            && !tokens.iter().skip(i + 2).take(2).any(|w| names::is_legal_form(w))
            && v.contains(&format!("{t} {next}"))
        {
            push(PiiKind::PersonName, "name-in-text");
        }
        // Card numbers and IBANs are often written in groups of four.
        if t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            let mut joined = String::new();
            for next in tokens.iter().skip(i).take(9) {
                // An IBAN may be one token of up to 34 characters.
                if !next.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || next.len() > 34 {
                    break;
                }
                joined.push_str(next);
                if is_payment_card(&joined) {
                    push(PiiKind::PaymentCard, "card-luhn-in-text");
                }
                if joined.len() >= 15 && is_iban(&joined) {
                    push(PiiKind::Iban, "iban-mod97-in-text");
                }
            }
        }
    }
    out
}

/// Street types written before a street's name, often a person's name.
const STREET_LEADS: &[&str] = &[
    "rue",
    "avenue",
    "av",
    "chemin",
    "boulevard",
    "bd",
    "allée",
    "allee",
    "impasse",
    "place",
    "quai",
    "cours",
    "route",
    "calle",
    "avenida",
    "camino",
    "paseo",
    "plaza",
    "via",
    "viale",
    "piazza",
    "corso",
    "rua",
    "praça",
    "praca",
    "travessa",
    "largo",
    "straße",
    "strasse",
    "platz",
];

/// "DE89": the first group of an IBAN written in groups of four.
fn iban_start(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 4 && b[..2].iter().all(u8::is_ascii_uppercase) && b[2..].iter().all(u8::is_ascii_digit)
}

/// A token that can be part of a phone number written in groups.
fn phone_group(t: &str) -> bool {
    !t.is_empty() && t.len() <= 14 && t.bytes().all(|b| b.is_ascii_digit() || b"-./".contains(&b))
}

const STREET_WORDS: &[&str] = &[
    "route",
    "loop",
    "walk",
    "meadow",
    "glen",
    "crossing",
    "path",
    "pike",
    "trail",
    "ridge",
    "point",
    "plaza",
    "terrace",
    "heights",
    "hill",
    "junction",
    "knoll",
    "landing",
    "manor",
    "mill",
    "mount",
    "orchard",
    "pass",
    "pine",
    "port",
    "ranch",
    "shore",
    "spring",
    "station",
    "stream",
    "summit",
    "trace",
    "turnpike",
    "valley",
    "vista",
    "well",
    "suite",
    "apt",
    "ville",
    "grove",
    "estate",
    "creek",
    "brook",
    "cove",
    "fork",
    "gateway",
    "harbor",
    "haven",
    "hollow",
    "inlet",
    "key",
    "lake",
    "mews",
    "overpass",
    "parkway",
    "prairie",
    "ramp",
    "rapid",
    "skyway",
    "spur",
    "underpass",
    "viaduct",
    "burg",
    "bypass",
    "causeway",
    "cliff",
    "common",
    "corner",
    "expressway",
    "extension",
    "falls",
    "ferry",
    "field",
    "flat",
    "ford",
    "forest",
    "freeway",
    "garden",
    "street",
    "st",
    "avenue",
    "ave",
    "road",
    "rd",
    "lane",
    "ln",
    "boulevard",
    "blvd",
    "drive",
    "dr",
    "way",
    "court",
    "ct",
    "place",
    "pl",
    "square",
    "sq",
    "terrace",
    "close",
    "strasse",
    "straße",
    "str",
    "weg",
    "allee",
    "platz",
    "rue",
    "avenida",
    "calle",
    "via",
    "viale",
    "piazza",
    "rua",
    "laan",
    "gade",
    "vej",
    "gatan",
    "vagen",
];

/// A house number next to a street word: "221B Baker Street", "Hauptstraße 5".
fn is_address(v: &str) -> bool {
    if !v.bytes().any(|b| b.is_ascii_digit()) || !v.contains(char::is_whitespace) {
        return false;
    }
    let words: Vec<String> = v
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('.').to_lowercase())
        .collect();
    if words.len() < 2 || words.len() > 12 {
        return false;
    }
    let number = |w: &str| w.len() <= 6 && w.chars().next().is_some_and(|c| c.is_ascii_digit());
    let street = |w: &str| {
        STREET_WORDS.contains(&w)
            || w.strip_suffix('s').is_some_and(|singular| STREET_WORDS.contains(&singular))
            || w.ends_with("straße")
            || w.ends_with("strasse")
    };
    words.windows(3).any(|x| number(&x[0]) && (street(&x[1]) || street(&x[2])))
        || words.windows(2).any(|x| (street(&x[0]) && number(&x[1])) || (number(&x[0]) && street(&x[1])))
}

/// A date: YYYY-MM-DD, DD/MM/YYYY, MM/DD/YYYY or DD.MM.YYYY with a year
/// from 1900 on (birth dates; other dates are not personal by themselves).
fn is_date(v: &str) -> bool {
    date_year(v).is_some()
}

/// The year of a date value (see [`is_date`]).
fn date_year(v: &str) -> Option<u32> {
    let parts: Vec<&str> = v.split(['-', '/', '.']).collect();
    if parts.len() != 3 || !parts.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().unwrap_or(0)).collect();
    let (y, a, b) = if parts[0].len() == 4 { (n[0], n[1], n[2]) } else { (n[2], n[0], n[1]) };
    ((1900..=2100).contains(&y) && (1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12)).then_some(y)
}

/// This year (UTC), for the age check of birth dates.
fn current_year() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as u32
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else { return false };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// Digits of `v` when it contains only digits and the given separators.
fn digits_with(v: &str, seps: &[u8]) -> Option<Vec<u8>> {
    let mut d = Vec::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_digit() {
            d.push(b - b'0');
        } else if !seps.contains(&b) {
            return None;
        }
    }
    Some(d)
}

pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_payment_card(v: &str) -> bool {
    let Some(d) = digits_with(v, b" -") else { return false };
    if !(13..=19).contains(&d.len()) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    // Issuer prefixes in use: Visa 4, Mastercard 2/5, Amex 34/37, Discover 6, JCB/Diners 3.
    // Of these only Amex issues 15 digits (15-digit Luhn numbers are mostly IMEIs).
    if d.len() == 15 && !(d[0] == 3 && matches!(d[1], 4 | 7)) {
        return false;
    }
    matches!(d[0], 2..=6) && luhn_valid(&d)
}

/// IBAN: two letters, two check digits, up to 30 alphanumerics; the number
/// rearranged and read in base 36 must be 1 mod 97.
pub fn is_iban(v: &str) -> bool {
    // Cheap shape test before any allocation: two letters, two digits.
    let head = v.as_bytes();
    if head.len() < 15 || !head[0].is_ascii_alphabetic() || !head[1].is_ascii_alphabetic() || !head[2].is_ascii_digit()
    {
        return false;
    }
    let s: String = v.chars().filter(|c| *c != ' ').collect::<String>().to_ascii_uppercase();
    let b = s.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_uppercase()
        || !b[2].is_ascii_digit()
        || !b[3].is_ascii_digit()
        || !b.iter().all(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let val = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') + 10 };
        rem = if val >= 10 { (rem * 100 + val) % 97 } else { (rem * 10 + val) % 97 };
    }
    rem == 1
}

/// US SSN as AAA-GG-SSSS (or 9 digits): area not 000, 666 or 900–999; group
/// not 00; serial not 0000; and not the famous advertising number.
pub fn is_us_ssn(v: &str) -> bool {
    let b = v.as_bytes();
    let d = match b.len() {
        11 if b[3] == b'-' && b[6] == b'-' => digits_with(v, b"-"),
        9 => digits_with(v, b""),
        _ => None,
    };
    let Some(d) = d.filter(|d| d.len() == 9) else { return false };
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !(area == 78 && group == 5 && serial == 1120)
}

/// International phone number shape: a leading + and 8–15 digits (E.164),
/// separators allowed.
fn is_phone(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('+').or_else(|| v.strip_prefix("00")) else { return false };
    let Some(d) = digits_with(rest, b" -().") else { return false };
    (8..=15).contains(&d.len()) && d[0] != 0
}

/// France's social security number (NIR): 15 digits (spaces allowed), sex
/// 1/2 (7/8 provisional), and a key equal to 97 − (the first 13 digits mod
/// 97); Corsica's 2A/2B department codes are not handled.
pub fn is_fr_nir(v: &str) -> bool {
    let Some(d) = digits_with(v, b" ") else { return false };
    if d.len() != 15 || !matches!(d[0], 1 | 2 | 7 | 8) {
        return false;
    }
    let number = d[..13].iter().fold(0u64, |a, &x| a * 10 + u64::from(x));
    let key = u64::from(d[13]) * 10 + u64::from(d[14]);
    97 - number % 97 == key
}

/// An identifier glued to a word in text (`ssn:123-45-6789`,
/// `call+4915447796116`, `mail=jane@example.org`): the part after the glue,
/// checked with the whole-value rules, reported as `…-in-text`.
fn glued(t: &str) -> Vec<(PiiKind, &'static str)> {
    let mut out = Vec::new();
    let mut candidates: Vec<&str> = Vec::new();
    if let Some(i) = t.rfind([':', '=', '#']) {
        candidates.push(&t[i + 1..]);
    }
    if let Some(i) = t.find('+').filter(|&i| i > 0) {
        candidates.push(&t[i..]);
    }
    for c in candidates {
        let c = c.trim_end_matches(['.', ',', ';', ')']);
        if c.len() < 6 {
            continue;
        }
        for (k, _) in detect_value(c) {
            let rule = match k {
                PiiKind::Email => "email-in-text",
                PiiKind::Phone => "phone-in-text",
                PiiKind::PaymentCard => "card-luhn-in-text",
                PiiKind::Iban => "iban-mod97-in-text",
                PiiKind::UsSsn => "ssn-in-text",
                PiiKind::IpAddress => "ip-in-text",
                _ => continue,
            };
            out.push((k, rule));
        }
    }
    out
}

/// Header hints for kinds that values alone cannot show, in English,
/// German, French, Spanish, Italian, Portuguese, Dutch and Polish.
pub fn header_hint(header: &str) -> Option<PiiKind> {
    let h: String = header.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
    const NAMES: &[&str] = &[
        "name",
        "firstname",
        "lastname",
        "surname",
        "fullname",
        "givenname",
        "familyname",
        "customername",
        "middlename",
        "maidenname",
        "patientname",
        "accountholder",
        "holdername",
        "cardholder",
        "vorname",
        "nachname",
        "familienname",
        "kontoinhaber",
        "nom",
        "prenom",
        "prénom",
        "nomcomplet",
        "nomdefamille",
        "nombre",
        "apellido",
        "apellidos",
        "nombrecompleto",
        "cognome",
        "nomecompleto",
        "sobrenome",
        "voornaam",
        "achternaam",
        "imie",
        "imię",
        "nazwisko",
    ];
    const DOB: &[&str] = &[
        "dob",
        "dateofbirth",
        "birthdate",
        "birthday",
        "birthdt",
        "geburtsdatum",
        "geburtstag",
        "datedenaissance",
        "datenaissance",
        "fechadenacimiento",
        "fechanacimiento",
        "datadinascita",
        "datadenascimento",
        "geboortedatum",
        "datauro",
        "dataurodzenia",
    ];
    const ADDRESS: &[&str] = &[
        "address",
        "street",
        "streetaddress",
        "addressline1",
        "addressline2",
        "homeaddress",
        "strasse",
        "straße",
        "anschrift",
        "adresse",
        "rue",
        "direccion",
        "dirección",
        "calle",
        "indirizzo",
        "via",
        "endereco",
        "endereço",
        "rua",
        "adres",
        "straat",
        "ulica",
    ];
    const PHONE: &[&str] = &[
        "phone",
        "phonenumber",
        "telephone",
        "tel",
        "mobile",
        "mobilephone",
        "cell",
        "cellphone",
        "fax",
        "telefon",
        "telefonnummer",
        "handy",
        "mobil",
        "telephonemobile",
        "portable",
        "telefono",
        "teléfono",
        "celular",
        "cellulare",
        "telefone",
        "telefoon",
        "mobiel",
    ];
    const EMAIL: &[&str] = &["email", "emailaddress", "mail", "courriel", "correo", "correoelectronico", "posta"];
    const MRN: &[&str] = &[
        "mrn",
        "medicalrecordnumber",
        "medicalrecord",
        "medicalrecordno",
        "chartnumber",
        "chartno",
        "patientid",
        "patientnumber",
        "patientno",
    ];
    const PLAN: &[&str] = &[
        "memberid",
        "membernumber",
        "healthplanid",
        "healthplannumber",
        "insuranceid",
        "insurancenumber",
        "policynumber",
        "subscriberid",
        "medicareid",
        "medicarenumber",
        "medicarembi",
        "mbi",
        "medicaidid",
        "versichertennummer",
    ];
    const ACCOUNT: &[&str] = &[
        "billingaccount",
        "bankaccount",
        "bankaccountnumber",
        "kontonummer",
        "patientaccount",
        "patientaccountnumber",
    ];
    const LICENCE: &[&str] = &[
        "driverslicense",
        "driverslicence",
        "driverlicense",
        "driverlicence",
        "licensenumber",
        "licencenumber",
        "dlnumber",
        "deanumber",
        "dea",
        "fuhrerschein",
        "führerschein",
        "permisdeconduire",
    ];
    const DEVICE: &[&str] =
        &["deviceid", "deviceserial", "serialnumber", "imei", "udi", "macaddress", "mac", "deviceidentifier"];
    if DOB.contains(&h.as_str()) {
        Some(PiiKind::DateOfBirth)
    } else if NAMES.contains(&h.as_str()) {
        Some(PiiKind::PersonName)
    } else if ADDRESS.contains(&h.as_str()) {
        Some(PiiKind::PostalAddress)
    } else if PHONE.contains(&h.as_str()) {
        Some(PiiKind::Phone)
    } else if EMAIL.contains(&h.as_str()) {
        Some(PiiKind::Email)
    } else if MRN.contains(&h.as_str()) {
        Some(PiiKind::MedicalRecordNumber)
    } else if PLAN.contains(&h.as_str()) {
        Some(PiiKind::HealthPlanNumber)
    } else if ACCOUNT.contains(&h.as_str()) {
        Some(PiiKind::AccountNumber)
    } else if LICENCE.contains(&h.as_str()) {
        Some(PiiKind::LicenceNumber)
    } else if DEVICE.contains(&h.as_str()) {
        Some(PiiKind::DeviceId)
    } else {
        None
    }
}

/// Evidence for one kind in one column: how many values matched which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub kind: PiiKind,
    pub rule: String,
    pub matches: u64,
    pub non_null: u64,
    /// 0–1: the share of values that matched, raised by a matching header.
    pub confidence: f64,
}

/// Accumulates detections over a column's values.
#[derive(Debug, Default, Clone)]
pub struct ColumnScan {
    header: String,
    non_null: u64,
    dates: u64,
    /// Dates of people at least 14 years old (born 1900 or later), and the span of their years.
    adult_birth_years: u64,
    year_min: u32,
    year_max: u32,
    counts: std::collections::BTreeMap<(PiiKind, &'static str), u64>,
}

/// In free text a kind counts from this share of values (and two values).
pub const IN_TEXT_MIN_SHARE: f64 = 0.01;

impl ColumnScan {
    pub fn new(header: &str) -> Self {
        ColumnScan { header: header.to_string(), ..Default::default() }
    }

    /// A non-null value already known to match no rule (a small integer).
    pub fn observe_clean(&mut self) {
        self.non_null += 1;
    }

    pub fn observe(&mut self, value: Option<&str>) {
        let Some(v) = value.filter(|v| !v.trim().is_empty()) else { return };
        self.non_null += 1;
        if let Some(y) = date_year(v.trim()) {
            self.dates += 1;
            if y + 14 <= current_year() {
                self.adult_birth_years += 1;
            }
            self.year_min = if self.dates == 1 { y } else { self.year_min.min(y) };
            self.year_max = self.year_max.max(y);
        }
        for (kind, rule) in detect(v) {
            *self.counts.entry((kind, rule)).or_default() += 1;
        }
    }

    /// Kinds whose share of matching values reaches `min_share` (or that the
    /// header names), most confident first.
    pub fn finish(&self, min_share: f64) -> Vec<Detection> {
        // A column of one kind in several formats ("+1 415 …" and
        // "(415) …") is judged on all of them: whole-value rules of a kind
        // are summed, under the rule that matched most.
        let mut by_kind: std::collections::BTreeMap<(PiiKind, bool), (&'static str, u64, u64)> = Default::default();
        for (&(kind, rule), &matches) in &self.counts {
            let e = by_kind.entry((kind, rule.ends_with("-in-text"))).or_insert((rule, 0, 0));
            if matches > e.2 {
                (e.0, e.2) = (rule, matches);
            }
            e.1 += matches;
        }
        let mut out: Vec<Detection> = by_kind
            .values()
            .map(|&(rule, matches, _)| (rule, matches))
            .zip(by_kind.keys().map(|&(k, _)| k))
            .filter_map(|((rule, matches), kind)| {
                let share = matches as f64 / self.non_null.max(1) as f64;
                let in_text = rule.ends_with("-in-text");
                // A checksummed or strictly structured identifier in free text
                // is personal data even once (a notes column with one SSN);
                // looser shapes (phones, IPs) need two and 1% of values.
                let strong =
                    matches!(rule, "email-in-text" | "ssn-in-text" | "card-luhn-in-text" | "iban-mod97-in-text");
                let enough = if in_text {
                    (strong && matches >= 1) || (share >= IN_TEXT_MIN_SHARE && matches >= 2)
                } else {
                    share >= min_share
                };
                enough.then(|| Detection {
                    kind,
                    rule: rule.to_string(),
                    matches,
                    non_null: self.non_null,
                    // A few e-mails in a notes column are PII all the same.
                    confidence: if in_text { (0.5 + share).min(1.0) } else { share },
                })
            })
            .collect();
        // Birth dates by their values: nearly all dates, of people at least
        // 14 years old, spread over decades (event dates such as orders are
        // recent and close together).
        let date_share = self.dates as f64 / self.non_null.max(1) as f64;
        if header_hint(&self.header) != Some(PiiKind::DateOfBirth)
            && self.dates >= 20
            && date_share >= 0.9
            && self.adult_birth_years as f64 >= 0.95 * self.dates as f64
            && self.year_max.saturating_sub(self.year_min) >= 30
        {
            out.push(Detection {
                kind: PiiKind::DateOfBirth,
                rule: "date-values-birth-range".into(),
                matches: self.adult_birth_years,
                non_null: self.non_null,
                confidence: 0.6,
            });
        }
        if let Some(kind) = header_hint(&self.header) {
            if kind == PiiKind::DateOfBirth && date_share >= min_share {
                out.push(Detection {
                    kind,
                    rule: "header+date-values".into(),
                    matches: self.dates,
                    non_null: self.non_null,
                    confidence: (0.6 + 0.4 * date_share).min(1.0),
                });
            } else if !out.iter().any(|d| d.kind == kind) {
                out.push(Detection {
                    kind,
                    rule: "header-name".into(),
                    matches: 0,
                    non_null: self.non_null,
                    confidence: 0.6,
                });
            }
        }
        out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(v: &str) -> Vec<PiiKind> {
        detect_value(v).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn payment_cards_need_a_valid_luhn_digit() {
        // Test numbers published by the card networks.
        for card in ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004"] {
            assert_eq!(kinds(card), [PiiKind::PaymentCard], "{card}");
        }
        for not_card in ["4111 1111 1111 1112", "1234567890123", "0000000000000000", "4444444444444444"] {
            assert!(!kinds(not_card).contains(&PiiKind::PaymentCard), "{not_card}");
        }
    }

    #[test]
    fn iban_mod97() {
        // Examples from the ISO 13616 registry.
        for iban in [
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
        ] {
            assert!(is_iban(iban), "{iban}");
        }
        for bad in ["GB82 WEST 1234 5698 7654 33", "DE89370400440532013001", "XX00", "1234567890123456"] {
            assert!(!is_iban(bad), "{bad}");
        }
    }

    #[test]
    fn ssn_structure_rules() {
        assert!(is_us_ssn("123-45-6789"));
        assert!(is_us_ssn("536224872"));
        for bad in
            ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000", "078-05-1120", "12-345-6789"]
        {
            assert!(!is_us_ssn(bad), "{bad}");
        }
    }

    #[test]
    fn emails_phones_and_addresses() {
        assert_eq!(kinds("jane.doe+ml@example.co.uk"), [PiiKind::Email]);
        for not_email in
            ["jane@", "@example.com", "jane@@example.com", "jane@example", "a..b@example.com", "x@-bad.com"]
        {
            assert!(!kinds(not_email).contains(&PiiKind::Email), "{not_email}");
        }
        assert_eq!(kinds("+44 20 7946 0958"), [PiiKind::Phone]);
        assert_eq!(kinds("0049 (30) 901820"), [PiiKind::Phone]);
        assert!(kinds("+12").is_empty());
        assert_eq!(kinds("192.168.1.20"), [PiiKind::IpAddress]);
        assert_eq!(kinds("2001:db8::8a2e:370:7334"), [PiiKind::IpAddress]);
        assert!(kinds("999.1.1.1").is_empty());
        assert!(kinds("Bachelors").is_empty(), "ordinary categorical values are not PII");
    }

    #[test]
    fn columns_combine_shares_and_header_hints() {
        let mut c = ColumnScan::new("contact");
        for v in ["a@example.com", "b@example.org", "", "not an email", "c@example.net"] {
            c.observe(Some(v));
        }
        c.observe(None);
        let d = c.finish(0.5);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].kind, d[0].matches, d[0].non_null), (PiiKind::Email, 3, 4));
        assert!((d[0].confidence - 0.75).abs() < 1e-12);
        // Evidence holds counts and rules, never values.
        let json = format!("{d:?}");
        assert!(!json.contains("example.com"));

        let mut names = ColumnScan::new("Last Name");
        names.observe(Some("Smith"));
        assert_eq!(names.finish(0.5)[0].kind, PiiKind::PersonName);
        assert_eq!(header_hint("date_of_birth"), Some(PiiKind::DateOfBirth));
        assert_eq!(header_hint("education"), None);
    }
}

#[cfg(test)]
mod free_text {
    use super::*;

    fn kinds(v: &str) -> Vec<PiiKind> {
        detect(v).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn identifiers_inside_text() {
        assert_eq!(kinds("please mail jane.doe@example.com before friday"), [PiiKind::Email]);
        assert_eq!(kinds("card 4111 1111 1111 1111 was declined"), [PiiKind::PaymentCard]);
        assert_eq!(kinds("refund to DE89 3704 0044 0532 0130 00 please"), [PiiKind::Iban]);
        assert_eq!(kinds("SSN on file: 123-45-6789."), [PiiKind::UsSsn]);
        assert_eq!(kinds("call me on +44 20 7946 0958 tomorrow"), [PiiKind::Phone]);
        assert_eq!(kinds("login from 203.0.113.7 failed"), [PiiKind::IpAddress]);
        assert!(kinds("the order shipped in 4 boxes of 1111 items").is_empty());
        assert!(kinds("version 2 of the report, 12 pages").is_empty());
    }

    #[test]
    fn national_phones_glued_identifiers_and_national_ids() {
        for v in ["(737) 555-0122", "06 73 57 25 90", "030 1234567", "020 7946 0958", "98765 43210"] {
            assert_eq!(kinds(v), [PiiKind::Phone], "{v}");
        }
        for v in ["2024-01-02", "12345", "1.234", "192.168.1.20", "3.14159", "10 000"] {
            assert!(!kinds(v).contains(&PiiKind::Phone), "{v} read as a phone number");
        }
        assert_eq!(kinds("ssn:123-45-6789"), [PiiKind::UsSsn]);
        assert_eq!(kinds("call+4915447796116"), [PiiKind::Phone]);
        assert_eq!(kinds("see ssn:123-45-6789 on file"), [PiiKind::UsSsn]);
        assert_eq!(kinds("1 41 06 40 611 247 11"), [PiiKind::NationalId]);
        assert!(!kinds("1 41 06 40 611 247 12").contains(&PiiKind::NationalId), "a wrong key");
    }

    #[test]
    fn one_ssn_in_a_notes_column_and_birth_dates_by_value() {
        let mut c = ColumnScan::new("notes");
        for i in 0..500 {
            c.observe(Some(if i == 250 {
                "patient ssn 123-45-6789 verified"
            } else {
                "no change since the last visit"
            }));
        }
        assert_eq!(c.finish(0.5).first().map(|d| d.kind), Some(PiiKind::UsSsn));
        let mut dob = ColumnScan::new("col_6");
        let mut orders = ColumnScan::new("col_7");
        for i in 0..100u32 {
            dob.observe(Some(&format!("{}-{:02}-{:02}", 1940 + i % 60, 1 + i % 12, 1 + i % 28)));
            orders.observe(Some(&format!("2024-{:02}-{:02}", 1 + i % 12, 1 + i % 28)));
        }
        assert_eq!(dob.finish(0.5).first().map(|d| d.rule.as_str()), Some("date-values-birth-range"));
        assert!(orders.finish(0.5).is_empty(), "recent event dates are not birth dates");
    }

    /// Kinds found by `bench pii` on names from another source (US Census)
    /// and identifiers in free text: each was missed before.
    #[test]
    fn held_out_names_and_national_identifiers_in_text() {
        for v in ["Call back on 312-252-3220 after 5pm", "Call back on (713) 214-6022", "ring 020 7946 0958 today"] {
            assert_eq!(kinds(v), [PiiKind::Phone], "{v}");
        }
        assert_eq!(kinds("Refund to IBAN DE89370400440532013000 approved"), [PiiKind::Iban]);
        assert_eq!(kinds("Profile at https://social.example.com/dykes12"), [PiiKind::Url]);
        // A listed given name and a surname on no list.
        assert_eq!(kinds("Erika Dykes"), [PiiKind::PersonName]);
        assert_eq!(kinds("Dykes, Erika"), [PiiKind::PersonName]);
        assert_eq!(kinds("Spoke with Erika Smith about the renewal"), [PiiKind::PersonName]);
        assert_eq!(kinds("Spoke with MELISSA SMITH about it"), [PiiKind::PersonName]);
        assert_eq!(kinds("Contact Erika Smith & team"), [PiiKind::PersonName]);
        // In prose both names must be listed: a surname on no list is missed
        // there (found by a review: a given name before any word is common).
        assert!(kinds("Spoke with Erika Dykes about the renewal").is_empty());
        // Not names: a common word, a company, a street, a house number, lower-case prose.
        for v in [
            "olive green",
            "Naser Bachmann KG",
            "Aubert Jacob SARL",
            "Bazin et Fils",
            "chemin Colette Lombard",
            "8132 Steven Stravenue",
            "we will price it",
            "Order 123456 shipped on 2024-05-06",
            "Grace Period extended",
            "Max Load exceeded",
            "MAX LOAD EXCEEDED ON CRANE",
            "Amber Alert test",
            "Crystal Reports license",
        ] {
            assert!(!kinds(v).contains(&PiiKind::PersonName), "{v} read as a name");
        }
        // Card groups, SSNs and IBAN groups are not phone numbers.
        assert_eq!(kinds("Card 4420 1049 2802 6057 declined"), [PiiKind::PaymentCard]);
        assert_eq!(kinds("Customer SSN 635-11-4920 verified"), [PiiKind::UsSsn]);
        // Digit groups that are not laid out as a phone number.
        for v in [
            "Amount 1200 3400 5600 due",
            "Ref 2024 0001 2345 closed",
            "PO 4500 1234 56 received",
            "Page 1 of 2, 555 1234 567",
        ] {
            assert!(!kinds(v).contains(&PiiKind::Phone), "{v} read as a phone number");
        }
        // A token of dots only (found by the fuzz target).
        assert!(kinds("call ... later").is_empty());
    }

    #[test]
    fn a_column_of_one_kind_in_several_formats_is_judged_whole() {
        let mut scan = ColumnScan::new("col_3");
        for v in [
            "+1 415 555 0199",
            "(415) 347-0155",
            "+44 20 7946 0958",
            "212-691-6359",
            "020 7364 8764",
            "+49 30 12345678",
        ] {
            scan.observe(Some(v));
        }
        let d = scan.finish(0.5);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].kind, d[0].matches, d[0].non_null), (PiiKind::Phone, 6, 6));
    }

    #[test]
    fn names_addresses_and_birth_dates() {
        assert_eq!(kinds("Maria Gonzalez"), [PiiKind::PersonName]);
        assert_eq!(kinds("Jane"), [PiiKind::PersonName]);
        assert!(kinds("Private").is_empty() && kinds("Married-civ-spouse").is_empty());
        assert_eq!(kinds("maria gonzalez"), [PiiKind::PersonName], "names in any case");
        assert_eq!(kinds("JEAN-PIERRE DUBOIS"), [PiiKind::PersonName]);
        assert!(kinds("olive green").is_empty() && kinds("new york").is_empty());
        assert_eq!(kinds("221B Baker Street, London"), [PiiKind::PostalAddress]);
        assert_eq!(kinds("Hauptstraße 5"), [PiiKind::PostalAddress]);
        assert!(kinds("5 stars").is_empty());
        let mut c = ColumnScan::new("birth_date");
        for v in ["1984-03-12", "12/03/1984", "1990-07-14", "n/a"] {
            c.observe(Some(v));
        }
        let d = c.finish(0.5);
        assert_eq!((d[0].kind, d[0].rule.as_str(), d[0].matches), (PiiKind::DateOfBirth, "header+date-values", 3));
    }

    #[test]
    fn a_few_emails_in_a_notes_column_flag_it() {
        let mut c = ColumnScan::new("notes");
        for i in 0..200 {
            c.observe(Some(if i % 40 == 0 { "write to a.b@example.org" } else { "customer called about delivery" }));
        }
        let d = c.finish(0.5);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].kind, d[0].rule.as_str(), d[0].matches), (PiiKind::Email, "email-in-text", 5));
        assert!(d[0].confidence >= 0.5);
    }
}

#[cfg(test)]
mod real_data {
    use super::*;

    /// UCI Adult holds no direct identifiers: no column may be flagged
    /// (false positives would mask or refuse honest data).
    #[test]
    fn uci_adult_has_no_false_positives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/adult/adult.data");
        let text = std::fs::read_to_string(&path).expect("datasets/adult/adult.data (copied from ../shared)");
        let headers = [
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
        let mut cols: Vec<ColumnScan> = headers.iter().map(|h| ColumnScan::new(h)).collect();
        let mut rows = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            for (c, v) in cols.iter_mut().zip(line.split(',')) {
                c.observe(Some(v.trim()));
            }
            rows += 1;
        }
        assert!(rows > 30_000, "read {rows} rows");
        for (h, c) in headers.iter().zip(&cols) {
            assert!(c.finish(0.05).is_empty(), "column {h} flagged: {:?}", c.finish(0.05));
        }
    }
}
