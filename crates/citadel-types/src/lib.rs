//! Shared vocabulary of Citadel: digests, ids, validated names, timestamps and
//! a wrapper that keeps secrets out of logs. No I/O happens here.
//!
//! Every type that crosses a crate boundary and could be confused with another
//! string (an artifact id, a principal id, a resource name) gets its own type,
//! so the compiler catches a mix-up.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors raised while parsing ids and names. Each names the offending input
/// kind and what a valid value looks like, never echoing secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TypeError {
    #[error("invalid digest: expected 64 lowercase hex characters (a SHA-256), got {len} characters")]
    DigestFormat { len: usize },
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0u8; 32]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Digest(out)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(TypeError::DigestFormat { len: s.len() });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| TypeError::DigestFormat { len: s.len() })?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256, for streams too large to hold in memory.
pub struct Sha256(aws_lc_rs::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256")
    }
}

impl Sha256 {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data)
    }
    pub fn finish(self) -> Digest {
        Digest::from_slice(self.0.finish().as_ref()).unwrap_or(Digest::ZERO)
    }
}

/// The public id of an artifact: the SHA-256 of its plaintext (for a file) or
/// of its canonical tree listing (for a directory; see `citadel-store`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArtifactId(pub Digest);

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactId({})", self.0.to_hex())
    }
}

impl FromStr for ArtifactId {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        Ok(ArtifactId(s.parse()?))
    }
}

/// A user-chosen name for a resource (artifact, dataset, model, principal).
///
/// Names end up in object keys, file paths, log lines and policy patterns, so
/// they are restricted: 1 to 200 bytes, `/`-separated segments, each starting
/// with an ASCII letter or digit and continuing with letters, digits, `.`, `_`
/// or `-`. That rules out `..`, absolute paths, empty segments, whitespace and
/// control characters: there is no way to traverse out of a directory with it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub const MAX_LEN: usize = 200;

    pub fn parse(s: &str) -> Result<Self, TypeError> {
        let err = |reason| TypeError::Name { name: s.chars().take(64).collect(), reason };
        if s.is_empty() {
            return Err(err("a name cannot be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(err("a name is at most 200 bytes"));
        }
        for segment in s.split('/') {
            let mut bytes = segment.bytes();
            match bytes.next() {
                None => return Err(err("empty path segment (leading, trailing or double '/')")),
                Some(b) if !b.is_ascii_alphanumeric() => {
                    return Err(err("each segment must start with a letter or digit (no '.', '..' or '-')"));
                }
                Some(_) => {}
            }
            if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(err("only letters, digits, '.', '_', '-' and '/' are allowed"));
            }
        }
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl FromStr for Name {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.0)
    }
}

/// A value that must never be printed: `Debug` and `Display` show
/// `[redacted]`. Use `expose()` at the one place the value is really needed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Self {
        Redacted(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Microseconds since the Unix epoch, UTC. Stored as BIGINT in the metadata
/// database so SQLite and PostgreSQL sort and compare it the same way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000) as i64)
    }

    pub fn to_datetime(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 with microseconds, e.g. `2026-11-23T12:00:00.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
        self.to_datetime().format(&fmt).unwrap_or_else(|_| self.0.to_string())
    }

    /// Parses RFC 3339 (any offset), or a bare date `YYYY-MM-DD` (midnight UTC).
    pub fn parse(s: &str) -> Option<Self> {
        use time::format_description::well_known::Rfc3339;
        if let Ok(dt) = time::OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Timestamp((dt.unix_timestamp_nanos() / 1_000) as i64));
        }
        let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s, &date_fmt).ok().map(|d| Timestamp(d.midnight().assume_utc().unix_timestamp() * 1_000_000))
    }

    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A random identifier (128 bits, hex) for rows such as principals, tokens and
/// requests. Not a secret.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable; fall back to a time-derived
    // value would be weaker, so we surface the condition through an id that
    // is still unique per call by mixing the timestamp.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&Timestamp::now().0.to_le_bytes());
    }
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip_and_known_vector() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert!("ABCD".parse::<Digest>().is_err());
        assert!(d.to_hex().to_uppercase().parse::<Digest>().is_err());
        let mut h = Sha256::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }

    #[test]
    fn names_reject_traversal_and_junk() {
        for ok in ["adult", "models/credit-v2", "a.b_c-d", "X9"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../etc/passwd", "/abs", "a//b", "a/", "a/../b", ".hidden", "a b", "a\0b", "é", "-x"] {
            assert!(Name::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Name::parse(&"a".repeat(201)).is_err());
    }

    #[test]
    fn redacted_never_prints() {
        let r = Redacted::new("hunter2".to_string());
        assert_eq!(format!("{r} {r:?}"), "[redacted] [redacted]");
        assert_eq!(r.expose(), "hunter2");
    }

    #[test]
    fn timestamps_format_and_parse() {
        let t = Timestamp(1_700_000_000_123_456);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse("2023-11-14"), Some(Timestamp(1_699_920_000_000_000)));
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
