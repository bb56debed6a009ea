//! UBJSON (Universal Binary JSON, draft 12), the binary form of XGBoost's
//! native model (`.ubj`). It is data only; a file is accepted when it parses
//! to its last byte as one value, within a nesting bound.

const MAX_DEPTH: u32 = 64;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn skip(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len())?;
        self.pos = end;
        Some(())
    }
    fn be(&mut self, n: usize) -> Option<i64> {
        let b = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        let mut v = if b[0] & 0x80 != 0 { -1i64 } else { 0 };
        for &x in b {
            v = (v << 8) | i64::from(x);
        }
        Some(v)
    }
    /// An integer given with its own type marker (lengths and counts).
    fn int(&mut self) -> Option<u64> {
        let v = match self.byte()? {
            b'i' => self.be(1)?,
            b'U' => i64::from(self.byte()?),
            b'I' => self.be(2)?,
            b'l' => self.be(4)?,
            b'L' => self.be(8)?,
            _ => return None,
        };
        u64::try_from(v).ok()
    }
    /// The payload of a value of type `t`.
    fn payload(&mut self, t: u8, depth: u32) -> Option<()> {
        match t {
            b'Z' | b'N' | b'T' | b'F' => Some(()),
            b'i' | b'U' | b'C' => self.skip(1),
            b'I' => self.skip(2),
            b'l' | b'd' => self.skip(4),
            b'L' | b'D' => self.skip(8),
            b'S' | b'H' => {
                let n = self.int()?;
                self.skip(n)
            }
            b'[' | b'{' => self.container(t == b'{', depth + 1),
            _ => None,
        }
    }
    fn container(&mut self, object: bool, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut typed = None;
        let mut count = None;
        if self.data.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            typed = Some(self.byte()?);
            if self.byte()? != b'#' {
                return None;
            }
            count = Some(self.int()?);
        } else if self.data.get(self.pos) == Some(&b'#') {
            self.pos += 1;
            count = Some(self.int()?);
        }
        let close = if object { b'}' } else { b']' };
        match count {
            Some(n) => {
                // A fixed-size typed array is skipped whole.
                if let (Some(t), false) = (typed, object) {
                    let size = match t {
                        b'i' | b'U' | b'C' => Some(1u64),
                        b'I' => Some(2),
                        b'l' | b'd' => Some(4),
                        b'L' | b'D' => Some(8),
                        b'Z' | b'N' | b'T' | b'F' => Some(0),
                        _ => None,
                    };
                    if let Some(size) = size {
                        return self.skip(n.checked_mul(size)?);
                    }
                }
                if n > (self.data.len() - self.pos) as u64 {
                    return None;
                }
                for _ in 0..n {
                    if object {
                        let k = self.int()?;
                        self.skip(k)?;
                    }
                    let t = match typed {
                        Some(t) => t,
                        None => self.byte()?,
                    };
                    self.payload(t, depth)?;
                }
                Some(())
            }
            None => loop {
                let t = self.byte()?;
                if t == close {
                    return Some(());
                }
                if object {
                    self.pos -= 1;
                    let k = self.int()?;
                    self.skip(k)?;
                    let t = self.byte()?;
                    self.payload(t, depth)?;
                } else {
                    self.payload(t, depth)?;
                }
            },
        }
    }
}

/// True when `data` is one UBJSON object or array, read to its last byte.
pub fn is_ubjson(data: &[u8]) -> bool {
    let Some(&first) = data.first() else { return false };
    if first != b'{' && first != b'[' {
        return false;
    }
    // Text JSON starts the same way; UBJSON's next byte is a marker, never a quote or space.
    if matches!(data.get(1), Some(b'"' | b' ' | b'\n' | b'\r' | b'\t')) {
        return false;
    }
    let mut c = Cursor { data, pos: 1 };
    c.container(first == b'{', 1).is_some() && c.pos == data.len()
}
