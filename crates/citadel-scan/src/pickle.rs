//! A pickle opcode walker (protocols 0–5) that resolves every imported
//! callable without executing or deserializing anything.
//!
//! It simulates only what it must, in bounded memory:
//! - a stack of small values: strings that could name a module or attribute,
//!   imported globals, integers, and small tuples and dicts (so `STACK_GLOBAL`
//!   operands, `_ufunc_reconstruct("numpy", "log1p")` arguments and joblib's
//!   array headers can be read); everything else is opaque;
//! - a sparse memo holding only such values (a 50 MB pickle of two million
//!   tuples memoizes nothing the walker keeps);
//! - joblib's inline arrays: after the `BUILD` of a
//!   `joblib.numpy_pickle.NumpyArrayWrapper`, joblib writes the array's raw
//!   bytes (after an alignment pad) into the stream and its unpickler reads
//!   them before the next opcode; the walker skips exactly those bytes (shape ×
//!   itemsize from the wrapper's state), or walks the nested pickle joblib
//!   writes for object arrays, and goes on, so a payload placed after them is
//!   found;
//! - several pickles in one stream (legacy `torch.save` files hold five, and
//!   `pickle.loads` stops at the first `STOP`): after a `STOP`, the remaining
//!   bytes are walked as another pickle. Trailing bytes that are not a pickle
//!   from their first opcode (raw storages of the legacy torch layout) are an
//!   info finding; every import seen in them is still judged, because a loader
//!   runs opcodes one by one and an import before the first bad byte has run.
//!
//! The walker reads from any `BufRead`, so a multi-gigabyte pickle on disk is
//! walked without being loaded; raw byte payloads are skipped, never copied.
//!
//! A `STACK_GLOBAL` (or a reconstructor such as numpy's `_ufunc_reconstruct`)
//! whose operands are not constant strings is critical: benign picklers never
//! compute an import at load time.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::rc::Rc;

use crate::allowlist::{Verdict, judge};
use crate::{Finding, ScanOptions, Severity};

/// Hard bounds on hostile input. Exceeding one is a warning: the pickle was
/// not read to its end, so it is not judged.
#[derive(Debug, Clone, Copy)]
pub struct PickleLimits {
    pub max_opcodes: u64,
    /// Stack entries (each at most a small value).
    pub max_stack: usize,
    /// Memo entries the walker keeps (only strings, globals and small objects are kept).
    pub max_memo: usize,
    /// Distinct globals one file may import.
    pub max_globals: usize,
}

impl Default for PickleLimits {
    fn default() -> Self {
        PickleLimits { max_opcodes: 4_000_000_000, max_stack: 1 << 22, max_memo: 1 << 22, max_globals: 100_000 }
    }
}

/// Strings longer than this are never an import's name; they are skipped unread.
const MAX_KEPT_STRING: u64 = 1024;
/// Values with more nodes than this are opaque.
const MAX_NODES: usize = 4096;
/// Nodes the memo keeps in all.
const MAX_MEMO_NODES: usize = 1 << 22;
/// A text opcode's line (protocol 0) is at most this long.
const MAX_LINE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Mark,
    Other,
    None,
    Bool(bool),
    Int(i64),
    Str(Rc<str>),
    /// `module.name` of an imported global.
    Global(Rc<str>),
    // Containers are shared (`Rc`): the memo and `DUP` copy values often.
    Tuple(Rc<[Val]>),
    Dict(Rc<DictV>),
    /// What `REDUCE`/`NEWOBJ` made of a known global, with its `BUILD` state.
    Obj {
        class: Rc<str>,
        args: Rc<Val>,
        state: Rc<Val>,
        /// The memo slot this object was stored in, so a later `BUILD` updates
        /// that copy too (a dtype shared by a hundred trees is fetched back
        /// from the memo with its state).
        memo: Option<u64>,
    },
}

/// A dict's items, with their node count kept as items are added.
#[derive(Debug, Clone, PartialEq, Default)]
struct DictV {
    pairs: Vec<(Val, Val)>,
    nodes: usize,
}

impl Val {
    fn nodes(&self) -> usize {
        match self {
            Val::Tuple(items) => 1 + items.iter().map(Val::nodes).sum::<usize>(),
            Val::Dict(d) => 1 + d.nodes,
            Val::Obj { args, state, .. } => 1 + args.nodes() + state.nodes(),
            _ => 1,
        }
    }
    /// Small values stay readable; larger ones become opaque.
    fn bounded(self) -> Val {
        if self.nodes() > MAX_NODES { Val::Other } else { self }
    }
    /// Worth keeping in the memo: what an import or an array header can be built from.
    fn memo_worthy(&self) -> bool {
        match self {
            Val::Str(s) => s.starts_with(|c: char| c.is_alphabetic() || c == '_'),
            Val::Global(_) | Val::Obj { .. } => true,
            Val::Tuple(items) => {
                items.len() <= 16
                    && items.iter().all(|v| match v {
                        Val::Int(_) | Val::None | Val::Bool(_) | Val::Str(_) | Val::Global(_) | Val::Obj { .. } => true,
                        Val::Tuple(_) => v.memo_worthy(),
                        _ => false,
                    })
                    && items.iter().any(|v| !matches!(v, Val::Str(_)))
            }
            _ => false,
        }
    }
    fn get(&self, key: &str) -> Option<&Val> {
        match self {
            // A Python dict keeps the last value given for a key.
            Val::Dict(d) => d.pairs.iter().rev().find(|(k, _)| matches!(k, Val::Str(s) if &**s == key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One global the pickle imports, with where it first appears.
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
    /// Complete pickles in the stream (legacy torch files hold several).
    pub pickles: u32,
    /// Bytes of joblib inline array data skipped.
    pub inline_array_bytes: u64,
    /// Bytes read (the walk reached this offset).
    pub bytes: u64,
}

/// True when `data` is a pickle: it starts with a `PROTO` opcode, or it walks
/// from its first byte to a `STOP` without a structural error (protocol 0–1
/// pickles and protocol 2+ streams whose `PROTO` was left out, which
/// `pickle.loads` runs all the same).
pub fn looks_like_pickle(data: &[u8]) -> bool {
    match data {
        [0x80, p, ..] if *p <= 5 => true,
        [first, ..] if starts_pickle(*first) => {
            let limits = PickleLimits { max_opcodes: 1 << 20, ..Default::default() };
            let opts = ScanOptions::default();
            let mut w = Walker::new("probe", limits, &opts);
            w.probe = true;
            w.run(data);
            // A clean pickle, or one that imports a callable before it breaks:
            // the unpickler runs opcodes one by one, so what came before the
            // break has run (and the rest is judged as not read to its end).
            (w.out.pickles > 0 && !w.broken) || w.code_seen
        }
        _ => false,
    }
}

/// Opcodes a pickle without `PROTO` can begin with (each pushes a value or a mark).
fn starts_pickle(op: u8) -> bool {
    matches!(
        op,
        b'(' | b'N'
            | b'I'
            | b'L'
            | b'F'
            | b'G'
            | b'J'
            | b'K'
            | b'M'
            | b'S'
            | b'T'
            | b'U'
            | b'V'
            | b'X'
            | b'B'
            | b'C'
            | b'c'
            | b'P'
            | b']'
            | b'}'
            | b')'
            | 0x88
            | 0x89
            | 0x8a
            | 0x8b
            | 0x8c
            | 0x8d
            | 0x8e
            | 0x8f
            | 0x95
            | 0x96
    )
}

struct Reader<R> {
    inner: R,
    pos: u64,
    scratch: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.inner.fill_buf().ok()?.first()?;
        self.inner.consume(1);
        self.pos += 1;
        Some(b)
    }
    fn at_end(&mut self) -> bool {
        self.inner.fill_buf().map_or(true, |b| b.is_empty())
    }
    /// Reads `n` (≤ MAX_KEPT_STRING or a small fixed width) bytes into scratch.
    fn take(&mut self, n: u64) -> Option<&[u8]> {
        self.scratch.clear();
        let got = (&mut self.inner).take(n).read_to_end(&mut self.scratch).ok()?;
        self.pos += got as u64;
        (got as u64 == n).then_some(&self.scratch[..])
    }
    /// Skips `n` bytes without copying them.
    fn skip(&mut self, n: u64) -> Option<()> {
        let mut left = n;
        while left > 0 {
            let buf = self.inner.fill_buf().ok()?;
            if buf.is_empty() {
                return None;
            }
            let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.inner.consume(k);
            self.pos += k as u64;
            left -= k as u64;
        }
        Some(())
    }
    fn le(&mut self, n: u64) -> Option<u64> {
        let b = self.take(n)?;
        Some(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }
    /// A `\n`-terminated line, without the newline.
    fn line(&mut self) -> Option<&[u8]> {
        self.scratch.clear();
        let got = (&mut self.inner).take(MAX_LINE).read_until(b'\n', &mut self.scratch).ok()?;
        self.pos += got as u64;
        if self.scratch.last() != Some(&b'\n') {
            return None;
        }
        self.scratch.pop();
        Some(&self.scratch[..])
    }
    /// A counted string: kept when short, skipped when long.
    fn string(&mut self, n: u64) -> Option<Val> {
        if n > MAX_KEPT_STRING {
            self.skip(n)?;
            return Some(Val::Other);
        }
        Some(Val::Str(text(self.take(n)?)))
    }
}

fn text(b: &[u8]) -> Rc<str> {
    String::from_utf8_lossy(b).into()
}

/// A saved pickle context: joblib writes object arrays as a nested pickle
/// inside the outer stream.
struct Frame {
    stack: Vec<Val>,
    memo: HashMap<u64, Val>,
    keys: MemoKeys,
}

/// The set of memo indices assigned so far, as CPython counts it: `MEMOIZE`
/// stores at `len(memo)`, the number of distinct indices (which `PUT n` may
/// have made other than a prefix). Kept as a contiguous prefix plus the few
/// indices beyond it, so a pickle of millions of memoized values costs nothing.
#[derive(Debug, Default, Clone)]
struct MemoKeys {
    prefix: u64,
    extra: std::collections::HashSet<u64>,
    explicit: bool,
    memoize: bool,
}

impl MemoKeys {
    fn len(&self) -> u64 {
        self.prefix + self.extra.len() as u64
    }
    fn insert(&mut self, idx: u64) {
        if idx < self.prefix {
            return;
        }
        if idx == self.prefix {
            self.prefix += 1;
            while self.extra.remove(&self.prefix) {
                self.prefix += 1;
            }
        } else {
            self.extra.insert(idx);
        }
    }
}

struct Walker<'o> {
    location: String,
    limits: PickleLimits,
    opts: &'o ScanOptions,
    out: PickleWalk,
    stack: Vec<Val>,
    memo: HashMap<u64, Val>,
    keys: MemoKeys,
    memo_nodes: usize,
    frames: Vec<Frame>,
    seen: HashMap<Rc<str>, usize>,
    /// `getattr` was used other than as `getattr(GLOBAL, "constant")`.
    getattr_unresolved: bool,
    /// Times `getattr` was pushed, and times a push was consumed by a resolved
    /// call: any other use (in a tuple, an argument, left over) leaves them unequal.
    getattr_pushed: u64,
    getattr_resolved: u64,
    mixed_reported: bool,
    /// An import of a plausible Python name, an EXT opcode or a computed import was seen.
    code_seen: bool,
    /// The pickle imports joblib's array wrapper: a `BUILD` on an object the
    /// walker cannot identify might be followed by inline array bytes.
    wrapper_imported: bool,
    /// After a complete pickle, the rest of the stream is walked as "trailing".
    trailing: bool,
    /// A structural error stopped the walk.
    broken: bool,
    /// Detection only: no findings are judged.
    probe: bool,
}

/// Walks every pickle in `data` (several may be concatenated).
pub fn walk(data: &[u8], location: &str, limits: PickleLimits) -> PickleWalk {
    walk_with(data, location, limits, &ScanOptions::default())
}

/// Walks every pickle read from `reader`, judging imports against the
/// built-in allowlist and `opts.allow`.
pub fn walk_with<R: BufRead>(reader: R, location: &str, limits: PickleLimits, opts: &ScanOptions) -> PickleWalk {
    let mut w = Walker::new(location, limits, opts);
    w.run(reader);
    w.judge_globals();
    w.out
}

impl<'o> Walker<'o> {
    fn new(location: &str, limits: PickleLimits, opts: &'o ScanOptions) -> Self {
        Walker {
            location: location.into(),
            limits,
            opts,
            out: PickleWalk::default(),
            stack: Vec::new(),
            memo: HashMap::new(),
            keys: MemoKeys::default(),
            memo_nodes: 0,
            frames: Vec::new(),
            seen: HashMap::new(),
            getattr_unresolved: false,
            getattr_pushed: 0,
            getattr_resolved: 0,
            mixed_reported: false,
            code_seen: false,
            wrapper_imported: false,
            trailing: false,
            broken: false,
            probe: false,
        }
    }

    fn finding(&mut self, severity: Severity, rule: &str, message: String) {
        if !self.probe {
            self.out.findings.push(Finding { severity, rule: rule.into(), location: self.location.clone(), message });
        }
    }

    /// A structural error: the walk stops. In trailing bytes after a complete
    /// pickle this is information (they are not a pickle); otherwise the
    /// pickle was not read to its end and cannot be judged.
    fn malformed(&mut self, offset: u64, why: String) {
        self.broken = true;
        let is_hard = why.starts_with(HARD);
        let why = why.trim_start_matches(HARD).to_string();
        if self.trailing && !is_hard {
            self.finding(
                Severity::Info,
                "pickle-trailing-bytes",
                format!(
                    "{} pickle(s) end before byte {offset}; the bytes after them are not a pickle ({why}) and no loader unpickles them from there",
                    self.out.pickles
                ),
            );
        } else {
            self.finding(
                Severity::Warning,
                "pickle-malformed",
                format!("the pickle stream is malformed at byte {offset}: {why}; it could not be read to its end"),
            );
        }
    }

    fn import(&mut self, module: &str, name: &str, offset: u64, opcode: &'static str) -> Val {
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    p.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                        && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                })
        };
        if ident(module) && ident(name) {
            self.code_seen = true;
        }
        let full: Rc<str> = format!("{module}.{name}").into();
        if &*full == "joblib.numpy_pickle.NumpyArrayWrapper" {
            self.wrapper_imported = true;
        }
        if !self.seen.contains_key(&full) {
            if self.seen.len() >= self.limits.max_globals {
                return Val::Other;
            }
            self.seen.insert(full.clone(), self.out.globals.len());
            self.out.globals.push(ImportedGlobal { module: module.into(), name: name.into(), offset, opcode });
        }
        Val::Global(full)
    }

    fn push(&mut self, v: Val) {
        if matches!(&v, Val::Global(g) if is_getattr(g)) {
            self.getattr_pushed += 1;
        }
        self.stack.push(v);
    }

    fn memo_put(&mut self, idx: u64, v: Val) {
        if let Some(old) = self.memo.remove(&idx) {
            self.memo_nodes -= old.nodes();
        }
        let n = v.nodes();
        if v.memo_worthy() && self.memo.len() < self.limits.max_memo && self.memo_nodes + n <= MAX_MEMO_NODES {
            self.memo_nodes += n;
            self.memo.insert(idx, v);
        }
    }

    /// `PUT n` and `MEMOIZE` in one pickle: no pickler writes that, and it
    /// is how memo indices are made to disagree between readers. Judged
    /// correctly all the same (see [`MemoKeys`]), and refused.
    fn memo_mix(&mut self, at: u64) {
        if self.keys.explicit && self.keys.memoize && !self.mixed_reported {
            self.mixed_reported = true;
            self.finding(
                Severity::Warning,
                "pickle-memo-mixed",
                format!(
                    "the pickle mixes PUT and MEMOIZE (at byte {at}); no pickler writes that, so it is not judged safe"
                ),
            );
        }
    }

    /// The stack top, about to be memoized under `idx` (an object remembers its slot).
    fn mark_memo(&mut self, op: u8, idx: u64) -> Result<Val, String> {
        let top = self.top_mut(op)?;
        if let Val::Obj { memo, .. } = top {
            *memo = Some(idx);
        }
        Ok(top.clone())
    }

    fn run<R: BufRead>(&mut self, reader: R) {
        let mut r = Reader { inner: reader, pos: 0, scratch: Vec::new() };
        self.step_all(&mut r);
        self.out.bytes = r.pos;
        if self.seen.len() >= self.limits.max_globals {
            self.finding(
                Severity::Warning,
                "pickle-too-large",
                format!("more than {} distinct imports; the rest were not judged", self.limits.max_globals),
            );
        }
    }

    fn step_all<R: BufRead>(&mut self, r: &mut Reader<R>) {
        loop {
            if r.at_end() {
                if self.out.pickles == 0 || !self.stack.is_empty() || !self.frames.is_empty() {
                    self.malformed(r.pos, "it ends before a STOP opcode".into());
                }
                return;
            }
            if self.out.opcodes >= self.limits.max_opcodes {
                self.broken = true;
                self.finding(
                    Severity::Warning,
                    "pickle-too-large",
                    format!(
                        "more than {} opcodes; the rest was not read, so it is not judged",
                        self.limits.max_opcodes
                    ),
                );
                return;
            }
            if self.stack.len() > self.limits.max_stack {
                self.malformed(r.pos, format!("the stack exceeds {} entries", self.limits.max_stack));
                return;
            }
            let at = r.pos;
            let Some(op) = r.u8() else { return };
            self.out.opcodes += 1;
            if let Err(why) = self.step(op, at, r) {
                self.malformed(at, why);
                return;
            }
            if op == b'.' {
                if let Some(f) = self.frames.pop() {
                    // The end of a nested pickle (a joblib object array): the outer one goes on.
                    self.stack = f.stack;
                    self.memo = f.memo;
                    self.keys = f.keys;
                    continue;
                }
                self.out.pickles += 1;
                self.stack.clear();
                self.memo.clear();
                self.keys = MemoKeys::default();
                if self.probe {
                    return;
                }
                if !r.at_end() {
                    self.trailing = true;
                }
            }
        }
    }

    fn pop(&mut self, op: u8) -> Result<Val, String> {
        match self.stack.pop() {
            Some(Val::Mark) => Err(format!("opcode 0x{op:02x} pops a MARK")),
            Some(v) => Ok(v),
            None => Err(format!("opcode 0x{op:02x} pops an empty stack")),
        }
    }

    fn pop_mark(&mut self, op: u8) -> Result<Vec<Val>, String> {
        let i = self
            .stack
            .iter()
            .rposition(|v| *v == Val::Mark)
            .ok_or_else(|| format!("opcode 0x{op:02x} finds no MARK"))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top_mut(&mut self, op: u8) -> Result<&mut Val, String> {
        match self.stack.last_mut() {
            Some(Val::Mark) | None => Err(format!("opcode 0x{op:02x} needs a value on the stack")),
            Some(v) => Ok(v),
        }
    }

    /// `REDUCE`/`NEWOBJ`: a call of `callable` with `args`.
    fn call(&mut self, callable: Val, args: Val, at: u64) -> Val {
        let Val::Global(class) = callable else { return Val::Other };
        // getattr(GLOBAL, "name") with constants is an import of GLOBAL.name
        // (how classmethods such as ZoneInfo._unpickle are pickled); anything
        // else computes what it reaches.
        if is_getattr(&class) {
            if let Val::Tuple(a) = &args
                && let [Val::Global(target), Val::Str(attr)] = &a[..]
                && let Some(&i) = self.seen.get(target)
            {
                let (m, n) = (self.out.globals[i].module.clone(), self.out.globals[i].name.clone());
                let attr = attr.clone();
                self.getattr_resolved += 1;
                return self.import(&m, &format!("{n}.{attr}"), at, "REDUCE(getattr)");
            }
            self.getattr_unresolved = true;
            return Val::Other;
        }
        // Reconstructors that import what their arguments name.
        if matches!(&*class, "numpy.core._ufunc_reconstruct" | "numpy._core._ufunc_reconstruct") {
            return match &args {
                Val::Tuple(a) if a.len() == 2 => match (&a[0], &a[1]) {
                    (Val::Str(m), Val::Str(n)) => {
                        let (m, n) = (m.clone(), n.clone());
                        self.import(&m, &n, at, "REDUCE(_ufunc_reconstruct)")
                    }
                    _ => self.computed_import(at, &class),
                },
                _ => self.computed_import(at, &class),
            };
        }
        // copyreg._reconstructor(cls, base, state) makes an instance of cls.
        let class = match (&*class, &args) {
            ("copyreg._reconstructor" | "copy_reg._reconstructor", Val::Tuple(a)) => match a.first() {
                Some(Val::Global(c)) => c.clone(),
                _ => class,
            },
            _ => class,
        };
        Val::Obj { class, args: Rc::new(args), state: Rc::new(Val::None), memo: None }.bounded()
    }

    fn computed_import(&mut self, at: u64, via: &str) -> Val {
        self.code_seen = true;
        self.finding(
            Severity::Critical,
            "pickle-unresolvable-global",
            format!("{via} at byte {at} imports a name computed at load time; benign picklers never do this"),
        );
        Val::Other
    }

    /// After `BUILD` of a joblib `NumpyArrayWrapper`: the array's bytes follow in the stream.
    fn joblib_inline_array<R: BufRead>(&mut self, state: &Val, r: &mut Reader<R>) -> Result<(), String> {
        // Every failure here is hard: the walker cannot know where the
        // array's bytes end, so what follows them cannot be judged.
        let bad = |why: &str| hard(format!("a joblib array header {why}, so the bytes after it cannot be judged"));
        let shape = match state.get("shape") {
            Some(Val::Tuple(dims)) => dims
                .iter()
                .map(|d| match d {
                    Val::Int(n) if *n >= 0 => Ok(*n as u64),
                    _ => Err(bad("has a shape that is not a tuple of sizes")),
                })
                .collect::<Result<Vec<u64>, String>>()?,
            _ => return Err(bad("has no readable shape")),
        };
        let count = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("overflows"))?;
        let (args, dstate) = match state.get("dtype") {
            Some(Val::Obj { class, args, state, .. }) if &**class == "numpy.dtype" => (args, state),
            _ => return Err(bad("has no readable dtype")),
        };
        let spec = match &**args {
            Val::Tuple(a) => match a.first() {
                Some(Val::Str(s)) => s.clone(),
                _ => return Err(bad("has a dtype without a type string")),
            },
            _ => return Err(bad("has a dtype without arguments")),
        };
        let kind = spec.chars().next().unwrap_or('?');
        if !matches!(kind, 'b' | 'i' | 'u' | 'f' | 'c' | 'M' | 'm' | 'S' | 'U' | 'V' | 'O') {
            return Err(bad("has an unknown dtype kind"));
        }
        // numpy's dtype.__setstate__ takes the element size (flexible
        // types), the flags (NPY_ITEM_HASOBJECT = 1), the subarray and the
        // fields from the BUILD state: (version, endian, subarray, names,
        // fields, elsize, alignment, flags). Without a BUILD the type string decides.
        let (elsize, has_object) = match &**dstate {
            Val::None => (None, kind == 'O'),
            Val::Tuple(items) if items.len() >= 8 => {
                let flags = match &items[7] {
                    Val::Int(f) => *f,
                    _ => return Err(bad("has dtype flags that cannot be read")),
                };
                let elsize = match &items[5] {
                    Val::Int(e) if *e > 0 => Some(*e as u64),
                    Val::Int(_) => None,
                    _ => return Err(bad("has a dtype element size that cannot be read")),
                };
                let nested = |v: &Val| match v {
                    Val::None => Some(false),
                    other => dtype_tree_has_object(other),
                };
                let sub = nested(&items[2]).ok_or_else(|| bad("has a subarray dtype that cannot be read"))?;
                let fields = nested(&items[4]).ok_or_else(|| bad("has structured fields that cannot be read"))?;
                (elsize, kind == 'O' || flags & 1 != 0 || sub || fields)
            }
            _ => return Err(bad("has a dtype state that cannot be read")),
        };
        if has_object {
            // joblib pickles object arrays into the stream (protocol 2): walk it as a nested pickle.
            let frame = Frame {
                stack: std::mem::take(&mut self.stack),
                memo: std::mem::take(&mut self.memo),
                keys: std::mem::take(&mut self.keys),
            };
            self.frames.push(frame);
            if self.frames.len() > 64 {
                return Err(hard("joblib arrays nest too deep".into()));
            }
            return Ok(());
        }
        let itemsize = match (kind, elsize) {
            ('S' | 'U' | 'V', Some(e)) => e,
            _ => {
                let digits: String = spec.chars().skip(1).collect();
                let unit: u64 = digits.parse().map_err(|_| bad("has an unknown dtype"))?;
                if kind == 'U' { unit * 4 } else { unit }
            }
        };
        // joblib reads the padding byte whenever the wrapper's alignment is not None.
        match state.get("numpy_array_alignment_bytes") {
            None | Some(Val::None) => {}
            Some(Val::Other) => return Err(bad("has an alignment that cannot be read")),
            Some(_) => {
                let pad = r.u8().ok_or_else(|| bad("is truncated before its padding"))?;
                r.skip(u64::from(pad)).ok_or_else(|| bad("is truncated in its padding"))?;
            }
        }
        let n = count.checked_mul(itemsize).ok_or_else(|| bad("overflows"))?;
        r.skip(n).ok_or_else(|| format!("the stream ends inside a joblib inline array of {n} bytes"))?;
        self.out.inline_array_bytes += n;
        Ok(())
    }

    fn step<R: BufRead>(&mut self, op: u8, at: u64, r: &mut Reader<R>) -> Result<(), String> {
        let trunc = || format!("opcode 0x{op:02x} is truncated");
        macro_rules! need {
            ($e:expr) => {
                $e.ok_or_else(trunc)?
            };
        }
        match op {
            b'(' => self.push(Val::Mark),
            b'.' => {
                // As CPython's load_stop: the top value is the result; the rest is ignored.
                self.pop(op)?;
            }
            b'0' => {
                self.pop(op)?;
            }
            b'1' => {
                self.pop_mark(op)?;
            }
            b'2' => {
                let top = self.top_mut(op)?.clone();
                self.push(top);
            }
            b'I' => {
                let l = need!(r.line());
                let v = match l {
                    b"00" => Val::Bool(false),
                    b"01" => Val::Bool(true),
                    _ => std::str::from_utf8(l).ok().and_then(|s| s.trim().parse().ok()).map_or(Val::Other, Val::Int),
                };
                self.push(v);
            }
            b'L' => {
                let l = need!(r.line());
                let v = std::str::from_utf8(l)
                    .ok()
                    .and_then(|s| s.trim().trim_end_matches('L').parse().ok())
                    .map_or(Val::Other, Val::Int);
                self.push(v);
            }
            b'F' | b'P' => {
                need!(r.line());
                self.push(Val::Other);
            }
            b'J' => {
                let v = need!(r.le(4)) as u32 as i32;
                self.push(Val::Int(i64::from(v)));
            }
            b'K' => {
                let v = need!(r.u8());
                self.push(Val::Int(i64::from(v)));
            }
            b'M' => {
                let v = need!(r.le(2));
                self.push(Val::Int(v as i64));
            }
            b'N' => self.push(Val::None),
            0x88 => self.push(Val::Bool(true)),
            0x89 => self.push(Val::Bool(false)),
            b'}' => self.push(Val::Dict(Rc::new(DictV::default()))),
            b']' | 0x8f | 0x97 => self.push(Val::Other),
            b')' => self.push(Val::Tuple(Rc::from(Vec::new()))),
            b'Q' | 0x98 => {
                self.pop(op)?;
                self.push(Val::Other);
            }
            b'R' => {
                let args = self.pop(op)?;
                let callable = self.pop(op)?;
                let v = self.call(callable, args, at);
                self.push(v);
            }
            b'S' => {
                let l = need!(r.line());
                let s = l
                    .strip_prefix(b"'")
                    .and_then(|l| l.strip_suffix(b"'"))
                    .or_else(|| l.strip_prefix(b"\"").and_then(|l| l.strip_suffix(b"\"")));
                let v = match s {
                    Some(s) if s.len() as u64 <= MAX_KEPT_STRING && !s.contains(&b'\\') => Val::Str(text(s)),
                    Some(_) => Val::Other,
                    None => return Err("STRING is not quoted".into()),
                };
                self.push(v);
            }
            b'V' => {
                let l = need!(r.line());
                // Raw-unicode-escape: a backslash escape could spell any name, so such a string is opaque.
                let v =
                    if l.contains(&b'\\') || l.len() as u64 > MAX_KEPT_STRING { Val::Other } else { Val::Str(text(l)) };
                self.push(v);
            }
            b'T' | b'X' => {
                let n = need!(r.le(4));
                let v = need!(r.string(n));
                self.push(v);
            }
            b'U' | 0x8c => {
                let n = u64::from(need!(r.u8()));
                let v = need!(r.string(n));
                self.push(v);
            }
            0x8d => {
                let n = need!(r.le(8));
                let v = need!(r.string(n));
                self.push(v);
            }
            b'B' => {
                let n = need!(r.le(4));
                need!(r.skip(n));
                self.push(Val::Other);
            }
            b'C' => {
                let n = u64::from(need!(r.u8()));
                need!(r.skip(n));
                self.push(Val::Other);
            }
            0x8e | 0x96 => {
                let n = need!(r.le(8));
                need!(r.skip(n));
                self.push(Val::Other);
            }
            b'a' => {
                self.pop(op)?;
                self.top_mut(op)?;
            }
            b'e' => {
                self.pop_mark(op)?;
                self.top_mut(op)?;
            }
            b'b' => {
                let state = self.pop(op)?;
                let obj = self.top_mut(op)?;
                let identified = matches!(obj, Val::Obj { .. });
                let (wrapper, slot) = match obj {
                    Val::Obj { class, state: s, memo, .. } => {
                        *s = Rc::new(state.clone());
                        (&**class == "joblib.numpy_pickle.NumpyArrayWrapper", *memo)
                    }
                    _ => (false, None),
                };
                if let Val::Obj { .. } = obj {
                    *obj = std::mem::replace(obj, Val::Other).bounded();
                    let updated = obj.clone();
                    if let Some(idx) = slot
                        && matches!(self.memo.get(&idx), Some(Val::Obj { memo: Some(m), .. }) if *m == idx)
                    {
                        self.memo_put(idx, updated);
                    }
                }
                if wrapper {
                    self.joblib_inline_array(&state, r)?;
                } else if self.wrapper_imported && !identified {
                    return Err(hard(
                        "BUILD on an object the walker cannot identify, in a pickle that imports joblib's array wrapper (inline array bytes may follow)".into(),
                    ));
                }
            }
            b'c' | b'i' => {
                let module = text(need!(r.line()));
                let name = text(need!(r.line()));
                if op == b'i' {
                    // As CPython's load_inst: the class is imported before the MARK is popped.
                    let class = self.import(&module, &name, at, "INST");
                    let args = self.pop_mark(op)?;
                    let v = self.call(class, Val::Tuple(Rc::from(args)), at);
                    self.push(v);
                } else {
                    let g = self.import(&module, &name, at, "GLOBAL");
                    self.push(g);
                }
            }
            b'd' => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err("DICT with an odd number of items".into());
                }
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                let nodes = pairs.iter().map(|(k, v)| k.nodes() + v.nodes()).sum();
                self.push(Val::Dict(Rc::new(DictV { pairs, nodes })).bounded());
            }
            b'l' | 0x91 => {
                self.pop_mark(op)?;
                self.push(Val::Other);
            }
            b't' => {
                let items = self.pop_mark(op)?;
                self.push(Val::Tuple(Rc::from(items)).bounded());
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n || self.stack[self.stack.len() - n..].contains(&Val::Mark) {
                    return Err(format!("TUPLE{n} needs {n} values"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Val::Tuple(Rc::from(items)).bounded());
            }
            b's' => {
                let v = self.pop(op)?;
                let k = self.pop(op)?;
                add_pairs(self.top_mut(op)?, vec![k, v]);
            }
            b'u' => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                add_pairs(self.top_mut(op)?, items);
            }
            0x90 => {
                self.pop_mark(op)?;
                self.top_mut(op)?;
            }
            b'o' => {
                let mut items = self.pop_mark(op)?;
                if items.is_empty() {
                    return Err("OBJ without a class".into());
                }
                let class = items.remove(0);
                let v = self.call(class, Val::Tuple(Rc::from(items)), at);
                self.push(v);
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => need!(std::str::from_utf8(need!(r.line())).ok().and_then(|s| s.trim().parse::<u64>().ok())),
                    b'h' => u64::from(need!(r.u8())),
                    _ => need!(r.le(4)),
                };
                let v = self.memo.get(&idx).cloned().unwrap_or(Val::Other);
                self.push(v);
            }
            b'p' | b'q' | b'r' => {
                let idx = match op {
                    b'p' => need!(std::str::from_utf8(need!(r.line())).ok().and_then(|s| s.trim().parse::<u64>().ok())),
                    b'q' => u64::from(need!(r.u8())),
                    _ => need!(r.le(4)),
                };
                self.keys.explicit = true;
                self.memo_mix(at);
                self.keys.insert(idx);
                if self.keys.extra.len() > self.limits.max_memo {
                    return Err(hard(format!("more than {} scattered memo indices", self.limits.max_memo)));
                }
                let top = self.mark_memo(op, idx)?;
                self.memo_put(idx, top);
            }
            0x94 => {
                let idx = self.keys.len();
                self.keys.memoize = true;
                self.memo_mix(at);
                self.keys.insert(idx);
                let top = self.mark_memo(op, idx)?;
                self.memo_put(idx, top);
            }
            b'G' => {
                need!(r.skip(8));
                self.push(Val::Other);
            }
            0x80 => {
                let p = need!(r.u8());
                if p > 5 {
                    return Err(format!("unknown protocol {p}"));
                }
                self.out.protocol.get_or_insert(p);
            }
            0x81 => {
                let args = self.pop(op)?;
                let cls = self.pop(op)?;
                let v = self.call(cls, args, at);
                self.push(v);
            }
            0x92 => {
                self.pop(op)?;
                let args = self.pop(op)?;
                let cls = self.pop(op)?;
                let v = self.call(cls, args, at);
                self.push(v);
            }
            0x82..=0x84 => {
                let n = [1u64, 2, 4][usize::from(op - 0x82)];
                let code = need!(r.le(n));
                self.code_seen = true;
                self.finding(
                    Severity::Critical,
                    "pickle-extension-registry",
                    format!(
                        "EXT opcode at byte {at} imports extension code {code} from the copyreg registry, which can name any callable"
                    ),
                );
                self.push(Val::Other);
            }
            0x8a => {
                let n = u64::from(need!(r.u8()));
                let v = if n <= 8 {
                    let b = need!(r.take(n));
                    let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..b.len()].copy_from_slice(b);
                    Val::Int(i64::from_le_bytes(buf))
                } else {
                    need!(r.skip(n));
                    Val::Other
                };
                self.push(v);
            }
            0x8b => {
                let n = need!(r.le(4));
                need!(r.skip(n));
                self.push(Val::Other);
            }
            0x93 => {
                let name = self.pop(op)?;
                let module = self.pop(op)?;
                let v = match (module, name) {
                    (Val::Str(m), Val::Str(n)) => self.import(&m, &n, at, "STACK_GLOBAL"),
                    _ => self.computed_import(at, "STACK_GLOBAL"),
                };
                self.push(v);
            }
            0x95 => {
                need!(r.take(8));
            }
            other => return Err(format!("unknown opcode 0x{other:02x}")),
        }
        Ok(())
    }

    fn judge_globals(&mut self) {
        for g in std::mem::take(&mut self.out.globals) {
            let full = format!("{}.{}", g.module, g.name);
            if is_getattr(&full) && !self.getattr_unresolved && self.getattr_pushed == self.getattr_resolved {
                // Every use was getattr(GLOBAL, "constant"), judged as that import.
                self.out.globals.push(g);
                continue;
            }
            let verdict = judge(&g.module, &g.name);
            let (severity, rule, why) = match verdict {
                Verdict::Safe => {
                    self.out.globals.push(g);
                    continue;
                }
                Verdict::Dangerous(why) => (Severity::Critical, "pickle-dangerous-global", why.to_string()),
                Verdict::Unknown if self.opts.allows(&full) => (
                    Severity::Info,
                    "pickle-allowed-by-workspace",
                    "not on the built-in allowlist; allowed by a reviewed extension (the workspace's allowlist, or --allow for this scan)".to_string(),
                ),
                Verdict::Unknown => (
                    Severity::Warning,
                    "pickle-unknown-global",
                    "not on the allowlist of known-safe globals, so the file is not judged safe (after a review: `citadel allowlist add` for registration in a workspace, `--allow` for one scan)".to_string(),
                ),
            };
            let message = format!("{} imports {full} at byte {}: {why}", g.opcode, g.offset);
            self.finding(severity, rule, message);
            self.out.globals.push(g);
        }
    }
}

fn is_getattr(full: &str) -> bool {
    full == "builtins.getattr" || full == "__builtin__.getattr"
}

/// Whether a tree of dtypes (a structured dtype's fields dict, a subarray
/// tuple) holds an object dtype; None when part of it cannot be read.
fn dtype_tree_has_object(v: &Val) -> Option<bool> {
    match v {
        Val::Obj { class, args, state, .. } if &**class == "numpy.dtype" => {
            let Val::Tuple(a) = &**args else { return None };
            let Some(Val::Str(s)) = a.first() else { return None };
            if s.starts_with('O') {
                return Some(true);
            }
            match &**state {
                Val::None => Some(false),
                Val::Tuple(items) if items.len() >= 8 => {
                    let flags = matches!(items[7], Val::Int(f) if f & 1 != 0);
                    let sub = dtype_tree_has_object(&items[2])?;
                    let fields = dtype_tree_has_object(&items[4])?;
                    Some(flags || sub || fields)
                }
                _ => None,
            }
        }
        Val::Tuple(items) => items.iter().try_fold(false, |acc, v| Some(acc || dtype_tree_has_object(v)?)),
        Val::Dict(d) => d.pairs.iter().try_fold(false, |acc, (_, v)| Some(acc || dtype_tree_has_object(v)?)),
        Val::Int(_) | Val::None | Val::Str(_) | Val::Bool(_) => Some(false),
        _ => None,
    }
}

/// Marks an error that stops the walk where the rest cannot be judged (a
/// warning even in trailing bytes, where structural errors are information).
fn hard(why: String) -> String {
    format!("{HARD}{why}")
}

const HARD: char = '\u{1}';

fn add_pairs(target: &mut Val, items: Vec<Val>) {
    if let Val::Dict(d) = target {
        let d = Rc::make_mut(d);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.nodes += k.nodes() + v.nodes();
            d.pairs.push((k, v));
        }
        // A large dict (an estimator's state) is never read: opaque at once.
        if d.pairs.len() > 256 || d.nodes >= MAX_NODES {
            *target = Val::Other;
        }
    }
}
