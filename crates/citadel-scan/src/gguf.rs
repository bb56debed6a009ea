//! GGUF (llama.cpp): the header, every metadata key/value and every tensor
//! info are read to their end, bounded by the file. Findings:
//! - a structure that runs past the file, an unknown value type or version:
//!   critical (loaders disagree on what such a file means);
//! - a key given twice: critical (loaders keep the last, a reviewer sees the first);
//! - a chat template (`tokenizer.chat_template`, `tokenizer.chat_template.*`)
//!   with Jinja template-injection constructs: critical. Chat templates are
//!   rendered by Jinja in Python servers; a sandbox escape walks dunder
//!   attributes (`__class__`, `__globals__`, `__builtins__`, `__subclasses__`)
//!   or reaches Jinja's globals (`cycler`, `joiner`, `lipsum`, `self`) to get
//!   to `os`. Benign templates never need either.

use crate::{Finding, Severity, finding};

/// Tensor infos and key/values at most (each takes well over 8 bytes anyway).
const MAX_ITEMS: u64 = 1 << 24;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    v1: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a length does not fit".to_string())?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            format!(
                "a field at byte {} of {} bytes runs past the end of the file ({} bytes)",
                self.pos,
                n,
                self.data.len()
            )
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn uint(&mut self, n: u64) -> Result<u64, String> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }
    fn count(&mut self) -> Result<u64, String> {
        if self.v1 { self.uint(4) } else { self.uint(8) }
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.count()?;
        self.take(n)
    }
}

/// Fixed sizes of the scalar value types (GGUF spec, `gguf_type`).
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

enum Value<'a> {
    Str(&'a [u8]),
    Other,
}

fn value<'a>(c: &mut Cursor<'a>, t: u32, depth: u32) -> Result<Value<'a>, String> {
    if let Some(n) = scalar_size(t) {
        c.take(n)?;
        return Ok(Value::Other);
    }
    match t {
        8 => Ok(Value::Str(c.string()?)),
        9 => {
            if depth > 4 {
                return Err("arrays nest too deep".into());
            }
            let inner = u32::try_from(c.uint(4)?).map_err(|_| "bad array type")?;
            let n = c.count()?;
            if let Some(size) = scalar_size(inner) {
                c.take(n.checked_mul(size).ok_or("an array size overflows")?)?;
            } else {
                if n > (c.data.len() - c.pos) as u64 {
                    return Err(format!("an array of {n} items cannot fit in the file"));
                }
                for _ in 0..n {
                    value(c, inner, depth + 1)?;
                }
            }
            Ok(Value::Other)
        }
        other => Err(format!("unknown value type {other}")),
    }
}

pub fn scan_gguf(location: &str, data: &[u8]) -> Vec<Finding> {
    match read(location, data) {
        Ok(f) => f,
        Err(why) => vec![finding(Severity::Critical, "gguf-invalid", location, why)],
    }
}

fn read(location: &str, data: &[u8]) -> Result<Vec<Finding>, String> {
    let mut c = Cursor { data, pos: 4, v1: false };
    let version = c.uint(4)?;
    if !(1..=3).contains(&version) {
        return Err(format!("unknown GGUF version {version}"));
    }
    c.v1 = version == 1;
    let tensors = c.count()?;
    let kvs = c.count()?;
    if tensors > MAX_ITEMS || kvs > MAX_ITEMS || tensors.saturating_add(kvs) > data.len() as u64 / 8 {
        return Err(format!("{tensors} tensors and {kvs} metadata entries cannot fit in {} bytes", data.len()));
    }
    let mut out = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for _ in 0..kvs {
        let key = String::from_utf8_lossy(c.string()?).into_owned();
        let t = u32::try_from(c.uint(4)?).map_err(|_| "bad value type".to_string())?;
        let v = value(&mut c, t, 0)?;
        if !keys.insert(key.clone()) {
            out.push(finding(
                Severity::Critical,
                "gguf-duplicate-key",
                location,
                format!("metadata key {key:?} appears twice; loaders keep the last, reviewers see the first"),
            ));
        }
        if (key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template."))
            && let Value::Str(s) = v
        {
            let template = String::from_utf8_lossy(s);
            if let Some(why) = template_injection(&template) {
                out.push(finding(
                    Severity::Critical,
                    "gguf-template-injection",
                    location,
                    format!("the chat template {key:?} {why}; rendering it can run code in the serving process"),
                ));
            }
        }
    }
    for i in 0..tensors {
        c.string()?;
        let dims = c.uint(4)?;
        if dims > 8 {
            return Err(format!("tensor {i} has {dims} dimensions"));
        }
        c.take(dims * if c.v1 { 4 } else { 8 })?;
        c.take(4 + 8)?;
    }
    Ok(out)
}

/// Names (identifiers in a template's code) that reach Python internals or
/// Jinja's globals; benign chat templates use none of them.
const INJECTION_NAMES: &[&str] = &[
    "attr",
    "globals",
    "builtins",
    "import",
    "popen",
    "subprocess",
    "eval",
    "exec",
    "mro",
    "subclasses",
    "cycler",
    "joiner",
    "lipsum",
    "self",
    "getattr",
    "os",
    "system",
    "format",
    "request",
    "config",
    "url_for",
    "get_flashed_messages",
    "modules",
    "func_globals",
    "read",
];

/// Why a Jinja template looks like a sandbox escape, if it does. In each
/// `{{ … }}` and `{% … %}` block: an identifier that is a dunder or in
/// [`INJECTION_NAMES`]; a string literal holding `__`, an escape sequence
/// (`\x5f` spells `_`), or starting or ending with `_` (pieces of a dunder
/// joined at render time, as in `'__glo' ~ 'bals__'`). Text outside blocks
/// is printed, never evaluated.
pub fn template_injection(template: &str) -> Option<String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let close = if after.starts_with("{{") {
            "}}"
        } else if after.starts_with("{%") {
            "%}"
        } else {
            rest = &after[1..];
            continue;
        };
        let end = block_end(after, close);
        let block = &after[..end];
        let shown: String = block.chars().take(80).collect();
        let (code, literals) = split_literals(block);
        for ident in code.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()) {
            let lower = ident.to_ascii_lowercase();
            if lower.contains("__") || INJECTION_NAMES.contains(&lower.as_str()) {
                return Some(format!("uses `{ident}` in `{shown}`"));
            }
        }
        for lit in literals {
            let escape = lit
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'\\' && (matches!(w[1], b'x' | b'u' | b'U' | b'N') || w[1].is_ascii_digit()));
            if lit.contains("__") || escape || lit.starts_with('_') || lit.ends_with('_') {
                return Some(format!("builds a name from the string {lit:?} in `{shown}`"));
            }
        }
        rest = &after[end..];
    }
    None
}

/// Where a block that starts `after` ends: past its closing delimiter,
/// skipping delimiters inside string literals (Jinja's lexer reads `"}}"` as
/// a string, not as the end of the block). The whole rest when unterminated.
fn block_end(after: &str, close: &str) -> usize {
    let bytes = after.as_bytes();
    let mut i = 2;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if bytes[i..].starts_with(close.as_bytes()) => return i + close.len(),
            None => {}
        }
        i += 1;
    }
    after.len()
}

/// The block's code with string literals blanked, and the literals.
fn split_literals(block: &str) -> (String, Vec<&str>) {
    let mut code = String::with_capacity(block.len());
    let mut lits = Vec::new();
    let mut chars = block.char_indices();
    while let Some((i, ch)) = chars.next() {
        if ch == '\'' || ch == '"' {
            let start = i + 1;
            let mut end = block.len();
            let mut escaped = false;
            for (j, c) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == ch {
                    end = j;
                    break;
                }
            }
            lits.push(&block[start..end.max(start)]);
            code.push(' ');
        } else {
            code.push(ch);
        }
    }
    (code, lits)
}
