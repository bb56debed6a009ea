//! Identifiers HIPAA's Safe Harbor list names that text can carry, by
//! value where the format allows it: medical record numbers with their
//! `MRN` prefix, Medicare beneficiary identifiers (CMS's MBI format), DEA
//! registration numbers (their check digit), IMEIs (15 digits, Luhn, not a
//! card number), MAC addresses and web URLs. Numbers that are plain digits
//! (chart, account, member numbers) are found by their headers.

/// `MRN12345678`, `MRN-02568791`, `MRN: 00276158`.
pub fn is_mrn(v: &str) -> bool {
    let Some(rest) = v.get(..3).filter(|p| p.eq_ignore_ascii_case("mrn")).map(|_| &v[3..]) else { return false };
    let digits = rest.trim_start_matches([' ', '-', ':', '#']);
    (5..=12).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A Medicare Beneficiary Identifier: 11 characters (dashes allowed) in
/// CMS's positions: digit 1-9, letter, letter or digit, digit, letter,
/// letter or digit, digit, letter, letter, digit, digit; letters exclude
/// S, L, O, I, B and Z.
pub fn is_medicare_mbi(v: &str) -> bool {
    let c: Vec<u8> = v.bytes().filter(|&b| b != b'-').map(|b| b.to_ascii_uppercase()).collect();
    if c.len() != 11 {
        return false;
    }
    let letter = |b: u8| b.is_ascii_uppercase() && !b"SLOIBZ".contains(&b);
    let alnum = |b: u8| letter(b) || b.is_ascii_digit();
    (b'1'..=b'9').contains(&c[0])
        && letter(c[1])
        && alnum(c[2])
        && c[3].is_ascii_digit()
        && letter(c[4])
        && alnum(c[5])
        && c[6].is_ascii_digit()
        && letter(c[7])
        && letter(c[8])
        && c[9].is_ascii_digit()
        && c[10].is_ascii_digit()
}

/// A DEA registration number: two letters, seven digits whose last is the
/// check digit of (d1 + d3 + d5) + 2 × (d2 + d4 + d6).
pub fn is_dea(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 9 || !b[0].is_ascii_alphabetic() || !(b[1].is_ascii_alphabetic() || b[1] == b'9') {
        return false;
    }
    if !b[2..].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let d: Vec<u32> = b[2..].iter().map(|x| u32::from(x - b'0')).collect();
    (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]
}

/// An IMEI: 15 digits with a valid Luhn digit, not an American Express card (34, 37).
pub fn is_imei(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 15 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let d: Vec<u8> = b.iter().map(|x| x - b'0').collect();
    !(d[0] == 3 && matches!(d[1], 4 | 7)) && crate::luhn_valid(&d)
}

/// A MAC address: six hex pairs separated by `:` or `-`.
pub fn is_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split([':', '-']).collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A web URL with a host.
pub fn is_url(v: &str) -> bool {
    let lower = v.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &v[8..]
    } else if lower.starts_with("http://") {
        &v[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    host.contains('.') && !host.contains(char::is_whitespace) && host.len() >= 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_check_digits() {
        assert!(is_mrn("MRN05911934") && is_mrn("MRN-02568791") && is_mrn("mrn: 00276158"));
        assert!(!is_mrn("MRN12") && !is_mrn("MRNA1234567"));
        assert!(is_medicare_mbi("1EG4-TE5-MK73") && is_medicare_mbi("4UP9CQ8WV52"));
        assert!(!is_medicare_mbi("1SG4TE5MK73"), "S is not used");
        // AB1234563: 1+3+5 + 2*(2+4+6) = 33, check digit 3.
        assert!(is_dea("AB1234563") && !is_dea("AB1234564"));
        assert!(is_imei("490154203237518") && !is_imei("490154203237519"));
        assert!(!is_imei("378282246310005"), "an American Express card");
        assert!(is_mac("b2:1c:55:65:ce:11") && is_mac("B2-1C-55-65-CE-11") && !is_mac("b2:1c:55:65:ce"));
        assert!(is_url("https://example.org/patient/1") && !is_url("http://x") && !is_url("example.org"));
    }
}
