//! Phone numbers in national formats (`(737) 555-0122`, `06 73 57 25 90`,
//! `030 1234567`), validated with `phonenumber`, a port of Google's
//! libphonenumber, against the numbering plans of common regions. Only
//! values shaped like a phone number are parsed (digits with separators,
//! or a national trunk prefix), so ordinary numbers, dates and ids are not:
//! a plain ten-digit string without separators is left to the header.

use std::str::FromStr;

/// Regions whose numbering plans are tried, most common first.
const REGIONS: &[&str] = &[
    "US", "GB", "DE", "FR", "IN", "BR", "ES", "IT", "NL", "CA", "AU", "CH", "AT", "BE", "PL", "MX", "JP", "SE", "IE",
    "PT",
];

fn shaped(v: &str) -> Option<usize> {
    if v.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 24 {
        return None;
    }
    if !b.iter().all(|c| c.is_ascii_digit() || b" -.()/".contains(c)) || !b[0].is_ascii_digit() && b[0] != b'(' {
        return None;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if !(7..=13).contains(&digits) {
        return None;
    }
    let separated = b.iter().any(|c| b" -.()/".contains(c));
    // Separators in phone positions: groups of 2-5 digits, not a decimal number or a date.
    if separated {
        let groups: Vec<&str> = v.split([' ', '-', '.', '(', ')', '/']).filter(|g| !g.is_empty()).collect();
        if groups.len() < 2 || groups.iter().any(|g| g.len() > 8) {
            return None;
        }
        if groups.len() == 2 && v.contains('.') && !v.contains(' ') {
            return None; // 1234.5678: a decimal number
        }
    } else if b[0] != b'0' {
        return None;
    }
    Some(digits)
}

/// Whether `v` is a valid national-format phone number of some common region.
pub fn is_national_phone(v: &str) -> bool {
    if shaped(v).is_none() {
        return false;
    }
    REGIONS.iter().any(|r| {
        phonenumber::country::Id::from_str(r)
            .ok()
            .and_then(|id| phonenumber::parse(Some(id), v).ok())
            .is_some_and(|n| phonenumber::is_valid(&n))
    })
}
