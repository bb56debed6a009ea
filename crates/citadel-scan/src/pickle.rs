//! A pickle opcode walker (protocols 0–5) that resolves every imported
//! callable without executing or deserializing anything.
//!
//! It simulates only what it must: a stack whose entries are either a known
//! string (so `STACK_GLOBAL` can be resolved) or "something", marks, and the
//! memo (so strings fetched back with `GET`/`BINGET` resolve too). Every other
//! value is opaque. A `STACK_GLOBAL` whose operands are not string constants
//! is itself a critical finding: a benign pickler never produces one.

use crate::allowlist::{Verdict, judge};
use crate::{Finding, Severity};

/// Hard bounds on hostile input.
#[derive(Debug, Clone, Copy)]
pub struct PickleLimits {
    pub max_opcodes: u64,
    pub max_stack: usize,
    pub max_memo: usize,
}

impl Default for PickleLimits {
    fn default() -> Self {
        PickleLimits { max_opcodes: 50_000_000, max_stack: 1 << 20, max_memo: 1 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Global(String),
    Other,
    Mark,
}

/// One global the pickle imports, with where it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedGlobal {
    pub module: String,
    pub name: String,
    pub offset: u64,
    pub opcode: &'static str,
}

/// What the walk found: the imports and any structural problem.
#[derive(Debug, Default)]
pub struct PickleWalk {
    pub globals: Vec<ImportedGlobal>,
    pub findings: Vec<Finding>,
    pub protocol: Option<u8>,
    pub opcodes: u64,
    /// Number of consecutive pickles in the stream (legacy torch files hold several).
    pub pickles: u32,
}

/// True when `data` plausibly starts a pickle (used for detection by content).
pub fn looks_like_pickle(data: &[u8]) -> bool {
    match data {
        [0x80, p, ..] if *p <= 5 => true,
        // Protocol 0/1 pickles start with one of a few opcodes and end with STOP.
        [first, ..] => {
            matches!(first, b'(' | b'c' | b']' | b'}' | b')' | b'N' | b'I' | b'S' | b'V' | b'X' | b'q' | b'K' | b'J')
                && data.ends_with(b".")
        }
        [] => false,
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn le(&mut self, n: usize) -> Option<u64> {
        let b = self.take(n as u64)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        self.pos += nl + 1;
        Some(&rest[..nl])
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Walks every pickle in `data` (several may be concatenated).
pub fn walk(data: &[u8], location: &str, limits: PickleLimits) -> PickleWalk {
    let mut out = PickleWalk::default();
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Val> = std::collections::HashMap::new();
    let malformed = |out: &mut PickleWalk, offset: usize, why: String| {
        out.findings.push(Finding {
            severity: Severity::Warning,
            rule: "pickle-malformed".into(),
            location: location.into(),
            message: format!("the pickle stream is malformed at byte {offset}: {why}; it was scanned up to there"),
        });
    };
    loop {
        if r.pos >= data.len() {
            if out.pickles == 0 || !stack.is_empty() {
                malformed(&mut out, r.pos, "it ends before a STOP opcode".into());
            }
            break;
        }
        if out.opcodes >= limits.max_opcodes {
            out.findings.push(Finding {
                severity: Severity::Warning,
                rule: "pickle-too-large".into(),
                location: location.into(),
                message: format!("more than {} opcodes; the rest was not scanned", limits.max_opcodes),
            });
            break;
        }
        if stack.len() > limits.max_stack || memo.len() > limits.max_memo {
            malformed(&mut out, r.pos, "the stack or memo exceeds the scanner's bounds".into());
            break;
        }
        let at = r.pos;
        let Some(op) = r.u8() else { break };
        out.opcodes += 1;
        // Stack helpers. An underflow means the stream is not a valid pickle.
        macro_rules! pop {
            () => {
                match stack.pop() {
                    Some(v) => v,
                    None => {
                        malformed(&mut out, at, format!("opcode 0x{op:02x} pops an empty stack"));
                        break;
                    }
                }
            };
        }
        macro_rules! pop_mark {
            () => {{
                match stack.iter().rposition(|v| *v == Val::Mark) {
                    Some(i) => {
                        let items = stack.split_off(i + 1);
                        stack.pop();
                        items
                    }
                    None => {
                        malformed(&mut out, at, format!("opcode 0x{op:02x} finds no MARK"));
                        break;
                    }
                }
            }};
        }
        macro_rules! need {
            ($e:expr) => {
                match $e {
                    Some(v) => v,
                    None => {
                        malformed(&mut out, at, format!("opcode 0x{op:02x} is truncated"));
                        break;
                    }
                }
            };
        }
        let import = |out: &mut PickleWalk, module: String, name: String, opcode: &'static str| {
            out.globals.push(ImportedGlobal { module: module.clone(), name: name.clone(), offset: at as u64, opcode });
            Val::Global(format!("{module}.{name}"))
        };
        match op {
            b'(' => stack.push(Val::Mark),
            b'.' => {
                out.pickles += 1;
                stack.clear();
                memo.clear();
                // Trailing bytes after the last STOP that are not another pickle are ignored
                // by loaders; scan them only when they look like one.
                if r.pos < data.len() && !looks_like_pickle(&data[r.pos..]) {
                    break;
                }
            }
            b'0' => {
                pop!();
            }
            b'1' => {
                pop_mark!();
            }
            b'2' => {
                let top = pop!();
                stack.push(top.clone());
                stack.push(top);
            }
            b'F' | b'I' | b'L' => {
                need!(r.line());
                stack.push(Val::Other);
            }
            b'J' => {
                need!(r.take(4));
                stack.push(Val::Other);
            }
            b'K' => {
                need!(r.take(1));
                stack.push(Val::Other);
            }
            b'M' => {
                need!(r.take(2));
                stack.push(Val::Other);
            }
            b'N' | b'}' | b']' | b')' | 0x88 | 0x89 | 0x8f | 0x97 => stack.push(Val::Other),
            b'P' => {
                need!(r.line());
                stack.push(Val::Other);
            }
            b'Q' | 0x98 => {
                pop!();
                stack.push(Val::Other);
            }
            b'R' => {
                pop!();
                pop!();
                stack.push(Val::Other);
            }
            b'S' => {
                let l = need!(r.line());
                let s = l
                    .strip_prefix(b"'")
                    .and_then(|l| l.strip_suffix(b"'"))
                    .or_else(|| l.strip_prefix(b"\"").and_then(|l| l.strip_suffix(b"\"")));
                stack.push(s.map_or(Val::Other, |s| Val::Str(text(s))));
            }
            b'T' => {
                let n = need!(r.le(4));
                let s = need!(r.take(n));
                stack.push(Val::Str(text(s)));
            }
            b'U' => {
                let n = need!(r.u8());
                let s = need!(r.take(u64::from(n)));
                stack.push(Val::Str(text(s)));
            }
            b'V' => {
                let l = need!(r.line());
                stack.push(Val::Str(text(l)));
            }
            b'X' => {
                let n = need!(r.le(4));
                let s = need!(r.take(n));
                stack.push(Val::Str(text(s)));
            }
            0x8c => {
                let n = need!(r.u8());
                let s = need!(r.take(u64::from(n)));
                stack.push(Val::Str(text(s)));
            }
            0x8d => {
                let n = need!(r.le(8));
                let s = need!(r.take(n));
                stack.push(Val::Str(text(s)));
            }
            b'B' => {
                let n = need!(r.le(4));
                need!(r.take(n));
                stack.push(Val::Other);
            }
            b'C' => {
                let n = need!(r.u8());
                need!(r.take(u64::from(n)));
                stack.push(Val::Other);
            }
            0x8e | 0x96 => {
                let n = need!(r.le(8));
                need!(r.take(n));
                stack.push(Val::Other);
            }
            b'a' | b'b' => {
                pop!();
            }
            b'c' | b'i' => {
                let module = text(need!(r.line()));
                let name = text(need!(r.line()));
                if op == b'i' {
                    pop_mark!();
                    import(&mut out, module, name, "INST");
                    stack.push(Val::Other);
                } else {
                    let g = import(&mut out, module, name, "GLOBAL");
                    stack.push(g);
                }
            }
            b'd' | b'l' | b't' | 0x91 => {
                pop_mark!();
                stack.push(Val::Other);
            }
            b'e' | b'u' | 0x90 => {
                pop_mark!();
            }
            b'o' => {
                let items = pop_mark!();
                if items.is_empty() {
                    malformed(&mut out, at, "OBJ without a class".into());
                    break;
                }
                stack.push(Val::Other);
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => need!(std::str::from_utf8(need!(r.line())).ok().and_then(|s| s.trim().parse::<u64>().ok())),
                    b'h' => u64::from(need!(r.u8())),
                    _ => need!(r.le(4)),
                };
                match memo.get(&idx) {
                    Some(v) => stack.push(v.clone()),
                    None => {
                        malformed(&mut out, at, format!("memo index {idx} was never stored"));
                        break;
                    }
                }
            }
            b'p' | b'q' | b'r' => {
                let idx = match op {
                    b'p' => need!(std::str::from_utf8(need!(r.line())).ok().and_then(|s| s.trim().parse::<u64>().ok())),
                    b'q' => u64::from(need!(r.u8())),
                    _ => need!(r.le(4)),
                };
                let top = need!(stack.last().cloned());
                memo.insert(idx, top);
            }
            0x94 => {
                let top = need!(stack.last().cloned());
                memo.insert(memo.len() as u64, top);
            }
            b's' => {
                pop!();
                pop!();
            }
            b'G' => {
                need!(r.take(8));
                stack.push(Val::Other);
            }
            0x80 => {
                let p = need!(r.u8());
                if p > 5 {
                    malformed(&mut out, at, format!("unknown protocol {p}"));
                    break;
                }
                out.protocol.get_or_insert(p);
            }
            0x81 => {
                pop!();
                pop!();
                stack.push(Val::Other);
            }
            0x82..=0x84 => {
                let n = [1usize, 2, 4][(op - 0x82) as usize];
                let code = need!(r.le(n));
                out.findings.push(Finding {
                    severity: Severity::Critical,
                    rule: "pickle-extension-registry".into(),
                    location: location.into(),
                    message: format!(
                        "EXT opcode at byte {at} imports extension code {code} from the copyreg registry, which can name any callable"
                    ),
                });
                stack.push(Val::Other);
            }
            0x85 => {
                pop!();
                stack.push(Val::Other);
            }
            0x86 => {
                pop!();
                pop!();
                stack.push(Val::Other);
            }
            0x87 => {
                pop!();
                pop!();
                pop!();
                stack.push(Val::Other);
            }
            0x8a => {
                let n = need!(r.u8());
                need!(r.take(u64::from(n)));
                stack.push(Val::Other);
            }
            0x8b => {
                let n = need!(r.le(4));
                need!(r.take(n));
                stack.push(Val::Other);
            }
            0x92 => {
                pop!();
                pop!();
                pop!();
                stack.push(Val::Other);
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => {
                        let g = import(&mut out, m, n, "STACK_GLOBAL");
                        stack.push(g);
                    }
                    _ => {
                        out.findings.push(Finding {
                            severity: Severity::Critical,
                            rule: "pickle-unresolvable-global".into(),
                            location: location.into(),
                            message: format!(
                                "STACK_GLOBAL at byte {at} imports a name computed at load time; benign picklers never do this"
                            ),
                        });
                        stack.push(Val::Other);
                    }
                }
            }
            0x95 => {
                need!(r.take(8));
            }
            other => {
                malformed(&mut out, at, format!("unknown opcode 0x{other:02x}"));
                break;
            }
        }
    }
    for g in &out.globals {
        let (severity, why) = match judge(&g.module, &g.name) {
            Verdict::Safe => continue,
            Verdict::Dangerous(why) => (Severity::Critical, why),
            Verdict::Unknown => (Severity::Warning, "not on the allowlist of known-safe globals"),
        };
        out.findings.push(Finding {
            severity,
            rule: if severity == Severity::Critical { "pickle-dangerous-global" } else { "pickle-unknown-global" }
                .into(),
            location: location.into(),
            message: format!("{} imports {}.{} at byte {}: {why}", g.opcode, g.module, g.name, g.offset),
        });
    }
    out
}
