//! NumPy `.npy`: the header is a Python literal (`ast.literal_eval`) whose
//! `descr` decides whether the body is raw data or a pickle (object dtypes,
//! read with `pickle.load`). The header is parsed here as a literal, strictly:
//! strings without escapes or implicit concatenation, no duplicate keys. A
//! `descr` is judged raw data only when every type in it is a plain type code
//! (`<f8`, `|S5`, `<M8[ns]`, structured lists of those); anything else,
//! object or not understood, has its body scanned as a pickle, so an object
//! array of strings is clean and a raw body behind an odd header is refused.

use crate::{Finding, Severity, finding};

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int,
    Bool,
    None,
    Seq(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Option<Lit> {
        self.ws();
        self.depth += 1;
        if self.depth > 32 {
            return None;
        }
        let v = match *self.s.get(self.i)? {
            q @ (b'\'' | b'"') => {
                let start = self.i + 1;
                let end = start + self.s[start..].iter().position(|&c| c == q)?;
                let body = &self.s[start..end];
                if body.contains(&b'\\') {
                    return None;
                }
                self.i = end + 1;
                // Implicit concatenation ('a' 'b') is not something numpy writes.
                self.ws();
                if matches!(self.s.get(self.i), Some(b'\'' | b'"')) {
                    return None;
                }
                Lit::Str(String::from_utf8(body.to_vec()).ok()?)
            }
            b'(' | b'[' => {
                let close = if self.s[self.i] == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(close) {
                        break;
                    }
                    items.push(self.value()?);
                    if !self.eat(b',') {
                        if !self.eat(close) {
                            return None;
                        }
                        break;
                    }
                }
                Lit::Seq(items)
            }
            b'{' => {
                self.i += 1;
                let mut pairs: Vec<(Lit, Lit)> = Vec::new();
                loop {
                    if self.eat(b'}') {
                        break;
                    }
                    let k = self.value()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    let v = self.value()?;
                    if pairs.iter().any(|(pk, _)| *pk == k) {
                        return None;
                    }
                    pairs.push((k, v));
                    if !self.eat(b',') {
                        if !self.eat(b'}') {
                            return None;
                        }
                        break;
                    }
                }
                Lit::Dict(pairs)
            }
            _ => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_') {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" | b"False" => Lit::Bool,
                    b"None" => Lit::None,
                    w if !w.is_empty()
                        && w.iter().enumerate().all(|(j, c)| c.is_ascii_digit() || (j == 0 && *c == b'-')) =>
                    {
                        Lit::Int
                    }
                    _ => return None,
                }
            }
        };
        self.depth -= 1;
        Some(v)
    }
}

/// Some(false): plain data types only; Some(true): an object type; None: not understood.
fn descr_has_object(d: &Lit) -> Option<bool> {
    match d {
        Lit::Str(s) => {
            let t = s.trim_start_matches(['<', '>', '|', '=']);
            let mut chars = t.chars();
            let kind = chars.next()?;
            let rest: &str = chars.as_str();
            let (digits, unit) = match rest.find('[') {
                Some(b) => (&rest[..b], Some(&rest[b..])),
                None => (rest, None),
            };
            if !digits.chars().all(|c| c.is_ascii_digit())
                || unit.is_some_and(|u| {
                    !(u.ends_with(']') && u[1..u.len() - 1].chars().all(|c| c.is_ascii_alphanumeric()))
                })
            {
                return None;
            }
            match kind {
                'O' => Some(true),
                'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'U' | 'V' | 'a' | 'M' | 'm' | '?' | 'e' | 'd' | 'g' | 'h' | 'H'
                | 'l' | 'L' | 'q' | 'Q' | 'B' | 'I' | 'F' | 'D' | 'G' => Some(false),
                _ => None,
            }
        }
        // A structured dtype: [(name, descr), (name, descr, shape), ...]; a name may be (title, name).
        Lit::Seq(fields) => fields.iter().try_fold(false, |acc, f| {
            let Lit::Seq(parts) = f else { return None };
            let (name, descr) = (parts.first()?, parts.get(1)?);
            match name {
                Lit::Str(_) => {}
                Lit::Seq(t) if t.len() == 2 && t.iter().all(|x| matches!(x, Lit::Str(_))) => {}
                _ => return None,
            }
            if parts.len() > 3 || parts.get(2).is_some_and(|s| !matches!(s, Lit::Int | Lit::Seq(_))) {
                return None;
            }
            Some(acc || descr_has_object(descr)?)
        }),
        _ => None,
    }
}

pub fn scan_npy(location: &str, data: &[u8], pickle_scan: &mut dyn FnMut(&str, &[u8]) -> Vec<Finding>) -> Vec<Finding> {
    let bad = |why: &str| {
        vec![finding(Severity::Warning, "npy-malformed", location, format!("malformed .npy: {why}; not judged"))]
    };
    let Some(&major) = data.get(6) else { return bad("truncated") };
    let (len, start) = match major {
        1 => (data.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10usize),
        2 | 3 => (data.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        _ => return bad("unknown version"),
    };
    let Some(end) = len.and_then(|l| start.checked_add(l)).filter(|&e| e <= data.len()) else {
        return bad("truncated header");
    };
    let header = &data[start..end];
    let body = &data[end..];
    let mut p = P { s: header, i: 0, depth: 0 };
    let parsed = p.value().filter(|_| {
        p.ws();
        p.i == header.len()
    });
    let descr = match &parsed {
        Some(Lit::Dict(pairs)) => {
            let keys: Vec<&str> =
                pairs.iter().filter_map(|(k, _)| if let Lit::Str(s) = k { Some(s.as_str()) } else { None }).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            if pairs.len() == 3 && sorted == ["descr", "fortran_order", "shape"] {
                pairs.iter().find(|(k, _)| *k == Lit::Str("descr".into())).map(|(_, v)| v)
            } else {
                None
            }
        }
        _ => None,
    };
    match descr.map(descr_has_object) {
        Some(Some(false)) => Vec::new(),
        verdict => {
            let why = if verdict == Some(Some(true)) {
                "an object-dtype array: its data is a pickle (loaded only with allow_pickle=True), scanned below"
            } else {
                "a header numpy may read as an object dtype; its data is scanned as the pickle numpy would load"
            };
            let mut f = vec![finding(Severity::Info, "npy-object-dtype", location, why.into())];
            f.extend(pickle_scan(location, body));
            f
        }
    }
}
