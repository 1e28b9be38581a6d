//! Where in a text a match could be: candidate windows, each with the patterns whose cues
//! made it (the scanner searches a window for those patterns only).
//!
//! The combined regex (210 detectors, several without any literal) runs at lazy-DFA speed,
//! ~2 ns a byte, over every byte. Almost all text holds no secret, so a cheap pass first finds
//! *cues* — something every match of a detector contains, a known distance after the match
//! start — and the regex then runs only over `[cue − back, cue + longest match]`, merged.
//!
//! Exactness: every match of every pattern lies inside one merged window (its cue is inside it,
//! the window spans from the earliest start to the longest end), so leftmost-first search over
//! the windows finds exactly what a search over the whole text finds. A cue that were not
//! necessary would lose secrets; the tests sample thousands of matches of every detector from
//! its own pattern and check each lies in a window.
//!
//! The pass looks at 64 bytes at a time: a Teddy-style fingerprint of the rarest three bytes
//! of every literal cue (nibble lookups, 16 buckets; case-insensitive cues cost nothing extra),
//! the `=` and `:` before which keyword cues in a name are looked for ([`NameCues`]), and
//! byte classes (digit, upper, token, `.`, `-`) from which the literal-less detectors' shapes
//! (card numbers, IBANs, SSNs, Discord's dotted token) are bit operations on 64-bit masks.
//! AVX-512BW or AVX2 when the CPU has it; a scalar version of the same tables otherwise (tested
//! to agree).
//! Custom `pattern` rules use their prefix literals (aho-corasick); a pattern without a finite
//! set of them turns the prefilter off (every byte is scanned, as before).

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::{
    Hir,
    literal::{ExtractKind, Extractor},
};

/// Something every match of a detector contains.
#[derive(Clone, Copy)]
pub enum Cue {
    Lit(Lit),
    /// `\b` 13 digits or more in groups of four, each maybe after a separator, or Amex's
    /// 4-6-5: payment cards.
    CardDigits,
    /// `\b` two upper-case letters, two digits, then (after an optional space) four letters or
    /// digits: IBANs.
    IbanHead,
    /// `\b` ddd-dd-dddd.
    Ssn,
    /// `.`, six token bytes, `.`: the middle of a Discord bot token, whose first `.` is 24..=26
    /// bytes after the match start.
    DotPair,
}

/// A literal cue: `[..]` in `text` is a byte class (`a-f` ranges allowed).
#[derive(Clone, Copy)]
pub struct Lit {
    pub text: &'static str,
    /// ASCII case-insensitive.
    pub ci: bool,
    /// The match starts at most this many bytes before the literal.
    pub back: usize,
    /// The literal starts the match after a `\b`: the byte before is not a word byte.
    pub word_start: bool,
    /// A necessary condition on the bytes after the literal.
    pub then: Option<fn(&[u8]) -> bool>,
    /// The literal lies in a name given a value: at most this many name bytes
    /// (`[A-Za-z0-9_.-]`) follow it, then an assignment ([`assign`]). The pass finds these
    /// from the assignments backwards instead of in its fingerprint (see [`NameCues`]).
    pub in_name: Option<usize>,
}

/// A literal cue at the match start.
pub const fn lit(text: &'static str) -> Cue {
    Cue::Lit(Lit {
        text,
        ci: false,
        back: 0,
        word_start: false,
        then: None,
        in_name: None,
    })
}

impl Cue {
    pub const fn ci(self) -> Cue {
        match self {
            Cue::Lit(mut l) => {
                l.ci = true;
                Cue::Lit(l)
            }
            other => other,
        }
    }
    /// `\b` before the literal (only for literals at the match start).
    pub const fn wb(self) -> Cue {
        match self {
            Cue::Lit(mut l) => {
                l.word_start = true;
                Cue::Lit(l)
            }
            other => other,
        }
    }
    pub const fn back(self, n: usize) -> Cue {
        match self {
            Cue::Lit(mut l) => {
                l.back = n;
                Cue::Lit(l)
            }
            other => other,
        }
    }
    pub const fn then(self, f: fn(&[u8]) -> bool) -> Cue {
        match self {
            Cue::Lit(mut l) => {
                l.then = Some(f);
                Cue::Lit(l)
            }
            other => other,
        }
    }
    /// See [`Lit::in_name`].
    pub const fn in_name(self, tail: usize) -> Cue {
        match self {
            Cue::Lit(mut l) => {
                l.in_name = Some(tail);
                Cue::Lit(l)
            }
            other => other,
        }
    }
    /// In a name given a value: [`named`] after the literal, found from the assignment.
    pub const fn named(self) -> Cue {
        self.then(named).in_name(NAME_TAIL)
    }
    /// Right before an assignment: [`assign`] after the literal, found from the assignment.
    pub const fn assigned(self) -> Cue {
        self.then(assign).in_name(0)
    }
}

pub fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `\b` can hold before a word byte at `p`: nothing or a non-word byte precedes it.
fn boundary_before(hay: &[u8], p: usize) -> bool {
    p == 0 || !is_word(hay[p - 1])
}

/// `\s` with Unicode off.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// A byte of a name given a value (`[A-Za-z0-9_.-]`).
pub fn is_name(b: u8) -> bool {
    is_word(b) || b == b'.' || b == b'-'
}

/// The most name bytes [`named`] allows after a keyword: the 20 of `named!` and what a
/// shorter cue than the whole keyword leaves.
pub const NAME_TAIL: usize = 24;

/// After a keyword: the rest of a name (at most [`NAME_TAIL`] name bytes), then an
/// assignment ([`assign`]).
pub fn named(r: &[u8]) -> bool {
    let n = r
        .iter()
        .take(NAME_TAIL + 1)
        .take_while(|b| is_name(**b))
        .count();
    n <= NAME_TAIL && assign(&r[n..])
}

/// `["']?\s{0,4}` then `:` or `=`: the assignment after a keyword.
pub fn assign(r: &[u8]) -> bool {
    let mut i = usize::from(matches!(r.first(), Some(b'"' | b'\'')));
    let mut spaces = 0;
    while spaces < 4 && r.get(i).copied().is_some_and(is_space) {
        i += 1;
        spaces += 1;
    }
    matches!(r.get(i), Some(b':' | b'='))
}

/// 256-bit byte set.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn add(&mut self, b: u8) {
        self.0[(b >> 6) as usize] |= 1 << (b & 63);
    }
    fn has(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] >> (b & 63) & 1 == 1
    }
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|b| self.has(*b))
    }
}

/// Parse a cue literal into byte sets, one per position.
fn parse_lit(text: &str, ci: bool) -> Result<Vec<ByteSet>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let mut set = ByteSet::default();
        if b[i] == b'[' {
            let close = b[i..]
                .iter()
                .position(|c| *c == b']')
                .ok_or_else(|| format!("cue `{text}`: `[` without `]`"))?
                + i;
            let class = &b[i + 1..close];
            let mut k = 0;
            while k < class.len() {
                if k + 2 < class.len() && class[k + 1] == b'-' {
                    for c in class[k]..=class[k + 2] {
                        set.add(c);
                    }
                    k += 3;
                } else {
                    set.add(class[k]);
                    k += 1;
                }
            }
            i = close + 1;
        } else {
            set.add(b[i]);
            i += 1;
        }
        if ci {
            for c in set.bytes().collect::<Vec<_>>() {
                set.add(c.to_ascii_lowercase());
                set.add(c.to_ascii_uppercase());
            }
        }
        if set.has(0) {
            return Err(format!("cue `{text}`: a NUL byte"));
        }
        out.push(set);
    }
    if out.len() < 3 {
        return Err(format!("cue `{text}`: shorter than 3 bytes"));
    }
    Ok(out)
}

/// What one found cue means for one pattern.
#[derive(Clone, Copy)]
struct Use {
    back: usize,
    word_start: bool,
    then: Option<fn(&[u8]) -> bool>,
    /// Longest match of the pattern.
    len: usize,
    /// Which source (pattern) the cue is for.
    src: u32,
}

struct Anchor {
    seq: Vec<ByteSet>,
    uses: Vec<Use>,
    /// For a literal in a name ([`Lit::in_name`]): the most name bytes after it.
    tail: usize,
    /// Where in the literal its fingerprint's three bytes are: the rarest three (`hp_` of
    /// `ghp_`, not `ghp`, which begins words), so that few ordinary bytes pass.
    off: usize,
}

impl Anchor {
    /// The three bytes the fingerprint looks for.
    fn print_seq(&self) -> &[ByteSet] {
        &self.seq[self.off..self.off + 3]
    }

    /// Where the literal ends if it is at `hay[p..]`, ending at or before `limit`.
    #[inline]
    fn at(&self, hay: &[u8], p: usize, limit: usize) -> Option<usize> {
        let end = p + self.seq.len();
        (end <= limit && self.seq.iter().zip(&hay[p..end]).all(|(s, x)| s.has(*x))).then_some(end)
    }

    /// The windows of the literal found at `hay[p..end]`, for each use whose conditions hold.
    fn emit(
        &self,
        hay: &[u8],
        from: usize,
        p: usize,
        end: usize,
        w: &mut Vec<(usize, usize, u32)>,
    ) {
        for u in &self.uses {
            if (u.word_start && !boundary_before(hay, p)) || u.then.is_some_and(|f| !f(&hay[end..]))
            {
                continue;
            }
            w.push((
                p.saturating_sub(u.back).max(from),
                (p + u.len).min(hay.len()),
                u.src,
            ));
        }
    }
}

/// Literals in a name given a value (`HEROKU_API_KEY=`, `"okta_token":`), found from the
/// assignments backwards: each `=` or `:` is looked at once, and the few name bytes before it
/// for the literals. How many literals there are costs nothing per byte; in the fingerprint,
/// seventy case-insensitive keywords made nearly every byte a candidate.
///
/// Exact: a match has the literal at `p`, then `k ≤ tail` name bytes, then `["']?\s{0,4}` and
/// `:` or `=` at `q` ([`named`], [`assign`]). Walking back from `q` over at most four spaces
/// and one quote lands right after those name bytes (a name byte is neither), and the literal
/// lies in the `tail + len` name bytes before that.
struct NameCues {
    anchors: Vec<Anchor>,
    /// Per first byte, the second bytes some literal may start with.
    pairs: Box<[ByteSet; 256]>,
    /// Per first byte, the literals that may start with it.
    by_first: Vec<Vec<u16>>,
    /// How far before its name's end a literal may start: its tail and length, at most.
    reach: usize,
}

impl NameCues {
    /// `anchors`: literals of name bytes only (checked where they are parsed).
    fn new(anchors: Vec<Anchor>) -> Self {
        let mut pairs = Box::new([ByteSet::default(); 256]);
        let mut by_first = vec![Vec::new(); 256];
        let mut reach = 0;
        for (i, a) in anchors.iter().enumerate() {
            reach = reach.max(a.tail + a.seq.len());
            for b0 in a.seq[0].bytes() {
                for b1 in a.seq[1].bytes() {
                    pairs[b0 as usize].add(b1);
                }
                let list: &mut Vec<u16> = &mut by_first[b0 as usize];
                if !list.contains(&(i as u16)) {
                    list.push(i as u16);
                }
            }
        }
        Self {
            anchors,
            pairs,
            by_first,
            reach,
        }
    }

    /// The windows of the literals in the names before the assignments `mask` marks in the
    /// chunk at `at`.
    fn cues(
        &self,
        hay: &[u8],
        from: usize,
        at: usize,
        mut mask: u64,
        w: &mut Vec<(usize, usize, u32)>,
    ) {
        while mask != 0 {
            let q = at + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            // Back over `\s{0,4}` and `["']?` to where the name ends.
            let mut end = q;
            while q - end < 4 && end > 0 && is_space(hay[end - 1]) {
                end -= 1;
            }
            if end > 0 && matches!(hay[end - 1], b'"' | b'\'') {
                end -= 1;
            }
            let floor = end.saturating_sub(self.reach).max(from);
            let mut start = end;
            while start > floor && is_name(hay[start - 1]) {
                start -= 1;
            }
            for p in start..end.saturating_sub(2) {
                let b0 = hay[p];
                if !self.pairs[b0 as usize].has(hay[p + 1]) {
                    continue;
                }
                for &ai in &self.by_first[b0 as usize] {
                    let a = &self.anchors[ai as usize];
                    if let Some(e) = a.at(hay, p, end)
                        && end - e <= a.tail
                    {
                        a.emit(hay, from, p, e, w);
                    }
                }
            }
        }
    }
}

/// One detector's cues with its longest match, or a custom pattern's syntax.
pub enum Source<'a> {
    Cues(&'a [Cue], usize),
    Pattern(Hir, usize),
    /// Literals every match contains, each with how far before it a match may start and how
    /// far after its start a match may end (a vault key's pieces).
    Literals(Vec<(Vec<u8>, usize, usize)>, usize),
}

// Class bits of one byte (each a nibble rectangle, so two lookups decide it exactly).
const C_DIGIT: u8 = 1;
const C_UP_A: u8 = 2; // 0x41..=0x4f
const C_UP_B: u8 = 4; // 0x50..=0x5a
const C_LO_A: u8 = 8; // 0x61..=0x6f
const C_LO_B: u8 = 16; // 0x70..=0x7a
const C_DOT: u8 = 32;
const C_DASH: u8 = 64;
const C_UNDER: u8 = 128;
const C_UPPER: u8 = C_UP_A | C_UP_B;
/// `[A-Za-z0-9_\-]`
const C_TOKEN: u8 = !C_DOT;

fn class_tables() -> ([u8; 16], [u8; 16]) {
    let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
    let mut add = |bytes: &mut dyn Iterator<Item = u8>, bit: u8| {
        for b in bytes {
            lo[(b & 15) as usize] |= bit;
            hi[(b >> 4) as usize] |= bit;
        }
    };
    add(&mut (b'0'..=b'9'), C_DIGIT);
    add(&mut (0x41..=0x4f), C_UP_A);
    add(&mut (0x50..=0x5a), C_UP_B);
    add(&mut (0x61..=0x6f), C_LO_A);
    add(&mut (0x70..=0x7a), C_LO_B);
    add(&mut std::iter::once(b'.'), C_DOT);
    add(&mut std::iter::once(b'-'), C_DASH);
    add(&mut std::iter::once(b'_'), C_UNDER);
    (lo, hi)
}

/// Fingerprint buckets, in groups of eight (a byte of bits each).
const BUCKETS: usize = 16;
const GROUPS: usize = BUCKETS / 8;

/// Per group, per byte of a chunk: the buckets whose fingerprint may start there.
type Buckets = [[u8; CHUNK]; GROUPS];

/// Bytes one step of the pass looks at.
const CHUNK: usize = 64;
/// Bytes a step reads: the fingerprint looks two bytes further.
const READ: usize = CHUNK + 2;

/// Masks of one 64-byte chunk: bit i is about byte i.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Chunk {
    /// Some literal cue's fingerprint (its three bytes at [`Anchor::off`]) may start here
    /// (which: `buckets[g][i]`).
    lits: u64,
    digit: u64,
    upper: u64,
    token: u64,
    dot: u64,
    dash: u64,
    /// `=` or `:`: where a name may end before ([`NameCues`]).
    assign: u64,
}

#[derive(Clone, Copy)]
struct Tables {
    /// Teddy: per group of eight buckets and fingerprint offset, low- and high-nibble bucket
    /// tables.
    lo: [[[u8; 16]; 3]; GROUPS],
    hi: [[[u8; 16]; 3]; GROUPS],
    class_lo: [u8; 16],
    class_hi: [u8; 16],
}

impl Tables {
    /// `s` holds at least [`READ`] bytes.
    fn chunk_scalar(&self, s: &[u8], buckets: &mut Buckets) -> Chunk {
        let mut c = Chunk::default();
        for i in 0..CHUNK {
            let mut any = 0;
            for (g, group) in buckets.iter_mut().enumerate() {
                let nib = |x: u8, k: usize| {
                    self.lo[g][k][(x & 15) as usize] & self.hi[g][k][(x >> 4) as usize]
                };
                let t = nib(s[i], 0) & nib(s[i + 1], 1) & nib(s[i + 2], 2);
                group[i] = t;
                any |= t;
            }
            let x = s[i];
            let class = self.class_lo[(x & 15) as usize] & self.class_hi[(x >> 4) as usize];
            let bit = |on: bool| u64::from(on) << i;
            c.lits |= bit(any != 0);
            c.digit |= bit(class & C_DIGIT != 0);
            c.upper |= bit(class & C_UPPER != 0);
            c.token |= bit(class & C_TOKEN != 0);
            c.dot |= bit(class & C_DOT != 0);
            c.dash |= bit(class & C_DASH != 0);
            c.assign |= bit(x == b'=' || x == b':');
        }
        c
    }

    /// # Safety
    /// The CPU has AVX2; `p` points at [`READ`] readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(unsafe_code)]
    unsafe fn chunk_avx2(&self, p: *const u8, buckets: &mut Buckets) -> Chunk {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees AVX2 and READ readable bytes at `p`; every load is
        // unaligned and ends at p + 2 + 32 + 32 = p + READ at most.
        unsafe {
            let tab =
                |t: &[u8; 16]| _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast()));
            let low = _mm256_set1_epi8(0x0f);
            let zero = _mm256_setzero_si256();
            let lo = self.lo.map(|g| [tab(&g[0]), tab(&g[1]), tab(&g[2])]);
            let hi = self.hi.map(|g| [tab(&g[0]), tab(&g[1]), tab(&g[2])]);
            let (class_lo, class_hi) = (tab(&self.class_lo), tab(&self.class_hi));
            let (eq, colon) = (_mm256_set1_epi8(b'=' as i8), _mm256_set1_epi8(b':' as i8));
            let any =
                |v: __m256i| u64::from(!(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero)) as u32));
            let mut c = Chunk::default();
            for half in 0..2 {
                let q = p.add(32 * half);
                let mut t = [_mm256_set1_epi8(-1); GROUPS];
                let mut l0 = zero;
                let mut h0 = zero;
                let mut v0 = zero;
                for k in 0..3 {
                    let v = _mm256_loadu_si256(q.add(k).cast());
                    let l = _mm256_and_si256(v, low);
                    let h = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    if k == 0 {
                        (l0, h0, v0) = (l, h, v);
                    }
                    for g in 0..GROUPS {
                        t[g] = _mm256_and_si256(
                            t[g],
                            _mm256_and_si256(
                                _mm256_shuffle_epi8(lo[g][k], l),
                                _mm256_shuffle_epi8(hi[g][k], h),
                            ),
                        );
                    }
                }
                for g in 0..GROUPS {
                    _mm256_storeu_si256(buckets[g].as_mut_ptr().add(32 * half).cast(), t[g]);
                }
                let t = t.iter().fold(zero, |a, x| _mm256_or_si256(a, *x));
                let class = _mm256_and_si256(
                    _mm256_shuffle_epi8(class_lo, l0),
                    _mm256_shuffle_epi8(class_hi, h0),
                );
                let has = |bits: u8| any(_mm256_and_si256(class, _mm256_set1_epi8(bits as i8)));
                let sh = 32 * half;
                c.lits |= any(t) << sh;
                c.digit |= has(C_DIGIT) << sh;
                c.upper |= has(C_UPPER) << sh;
                c.token |= has(C_TOKEN) << sh;
                c.dot |= has(C_DOT) << sh;
                c.dash |= has(C_DASH) << sh;
                let ops = _mm256_or_si256(_mm256_cmpeq_epi8(v0, eq), _mm256_cmpeq_epi8(v0, colon));
                c.assign |= u64::from(_mm256_movemask_epi8(ops) as u32) << sh;
            }
            c
        }
    }

    /// [`Self::chunk_avx2`] in one 64-byte vector (AVX-512BW: masks come out as 64 bits).
    ///
    /// # Safety
    /// The CPU has AVX-512BW; `p` points at [`READ`] readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw")]
    #[allow(unsafe_code)]
    unsafe fn chunk_avx512(&self, p: *const u8, buckets: &mut Buckets) -> Chunk {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees AVX-512BW and READ readable bytes at `p`; the loads are
        // unaligned and end at p + 2 + 64 = p + READ at most.
        unsafe {
            let tab = |t: &[u8; 16]| _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr().cast()));
            let low = _mm512_set1_epi8(0x0f);
            let mut t = [_mm512_set1_epi8(-1); GROUPS];
            let (mut l0, mut h0, mut v0) = (low, low, low);
            for k in 0..3 {
                let v = _mm512_loadu_si512(p.add(k).cast());
                let l = _mm512_and_si512(v, low);
                let h = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                if k == 0 {
                    (l0, h0, v0) = (l, h, v);
                }
                for (g, tg) in t.iter_mut().enumerate() {
                    *tg = _mm512_and_si512(
                        *tg,
                        _mm512_and_si512(
                            _mm512_shuffle_epi8(tab(&self.lo[g][k]), l),
                            _mm512_shuffle_epi8(tab(&self.hi[g][k]), h),
                        ),
                    );
                }
            }
            for g in 0..GROUPS {
                _mm512_storeu_si512(buckets[g].as_mut_ptr().cast(), t[g]);
            }
            let t = t
                .iter()
                .fold(_mm512_setzero_si512(), |a, x| _mm512_or_si512(a, *x));
            let class = _mm512_and_si512(
                _mm512_shuffle_epi8(tab(&self.class_lo), l0),
                _mm512_shuffle_epi8(tab(&self.class_hi), h0),
            );
            let has = |bits: u8| _mm512_test_epi8_mask(class, _mm512_set1_epi8(bits as i8));
            Chunk {
                lits: _mm512_test_epi8_mask(t, t),
                digit: has(C_DIGIT),
                upper: has(C_UPPER),
                token: has(C_TOKEN),
                dot: has(C_DOT),
                dash: has(C_DASH),
                assign: _mm512_cmpeq_epi8_mask(v0, _mm512_set1_epi8(b'=' as i8))
                    | _mm512_cmpeq_epi8_mask(v0, _mm512_set1_epi8(b':' as i8)),
            }
        }
    }
}

/// The vector instructions the pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simd {
    Scalar,
    Avx2,
    Avx512,
}

pub struct Prefilter {
    tables: Tables,
    anchors: Vec<Anchor>,
    /// Anchor indices per Teddy bucket.
    buckets: [Vec<usize>; BUCKETS],
    /// Every fingerprint's three bytes: rejects the byte triples Teddy's nibbles let through,
    /// and says which anchors the others may begin.
    triples: Triples,
    /// Per shape cue ([`SHAPE_CARD`] ...): the patterns it stands for.
    shapes: [Shape; 4],
    /// Literals in a name given a value, found from the assignments.
    names: Option<NameCues>,
    /// Custom patterns' literals, each with (how far before it a match may start, how far
    /// after its start a match may end, the source).
    custom: Option<(AhoCorasick, Vec<CustomLit>)>,
    simd: Simd,
}

impl Prefilter {
    /// `None` when some pattern has no usable cue (the scanner then scans every byte).
    pub fn new(sources: &[Source<'_>]) -> Result<Option<Self>, String> {
        // Cues with the same text share one anchor: (text, case-insensitive, in a name,
        // anchor).
        let mut anchors: Vec<(&str, bool, bool, Anchor)> = Vec::new();
        let mut custom_lits: Vec<Vec<u8>> = Vec::new();
        let mut custom_len = Vec::new();
        let mut shapes: [Shape; 4] = Default::default();
        for (si, src) in sources.iter().enumerate() {
            let si = si as u32;
            match *src {
                Source::Cues(cues, len) => {
                    if cues.is_empty() {
                        return Ok(None);
                    }
                    for cue in cues {
                        match cue {
                            Cue::Lit(l) => {
                                if l.word_start && l.back != 0 {
                                    return Err(format!("cue `{}`: \\b with back > 0", l.text));
                                }
                                let in_name = l.in_name.is_some();
                                let u = Use {
                                    back: l.back,
                                    word_start: l.word_start,
                                    then: l.then,
                                    len,
                                    src: si,
                                };
                                match anchors
                                    .iter_mut()
                                    .find(|a| a.0 == l.text && a.1 == l.ci && a.2 == in_name)
                                {
                                    Some(a) => {
                                        a.3.uses.push(u);
                                        a.3.tail = a.3.tail.max(l.in_name.unwrap_or(0));
                                    }
                                    None => anchors.push((
                                        l.text,
                                        l.ci,
                                        in_name,
                                        Anchor {
                                            seq: {
                                                let seq = parse_lit(l.text, l.ci)?;
                                                if in_name
                                                    && seq.iter().any(|set| {
                                                        set.bytes().any(|b| !is_name(b))
                                                    })
                                                {
                                                    return Err(format!(
                                                        "cue `{}`: in a name, but holds a byte no name holds",
                                                        l.text
                                                    ));
                                                }
                                                seq
                                            },
                                            uses: vec![u],
                                            tail: l.in_name.unwrap_or(0),
                                            off: 0,
                                        },
                                    )),
                                }
                            }
                            Cue::CardDigits => shapes[SHAPE_CARD].add(len, si),
                            Cue::IbanHead => shapes[SHAPE_IBAN].add(len, si),
                            Cue::Ssn => shapes[SHAPE_SSN].add(len, si),
                            Cue::DotPair => shapes[SHAPE_DOTS].add(len, si),
                        }
                    }
                }
                Source::Pattern(ref hir, len) => {
                    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
                    match seq.literals() {
                        Some(lits) if !lits.is_empty() && lits.iter().all(|l| !l.is_empty()) => {
                            for l in lits {
                                custom_lits.push(l.as_bytes().to_vec());
                                custom_len.push(CustomLit {
                                    back: 0,
                                    fwd: len,
                                    src: si,
                                });
                            }
                        }
                        _ => return Ok(None),
                    }
                }
                Source::Literals(ref lits, _) => {
                    for (l, back, fwd) in lits {
                        custom_lits.push(l.clone());
                        custom_len.push(CustomLit {
                            back: *back,
                            fwd: *fwd,
                            src: si,
                        });
                    }
                }
            }
        }
        let (cls_lo, cls_hi) = class_tables();
        let mut tables = Tables {
            lo: [[[0; 16]; 3]; GROUPS],
            hi: [[[0; 16]; 3]; GROUPS],
            class_lo: cls_lo,
            class_hi: cls_hi,
        };
        let (named, anchors): (Vec<_>, Vec<_>) = anchors.into_iter().partition(|a| a.2);
        let names = if named.is_empty() {
            None
        } else {
            Some(NameCues::new(named.into_iter().map(|a| a.3).collect()))
        };
        let mut anchors = anchors;
        for a in &mut anchors {
            a.3.off = rarest_three(&a.3.seq);
        }
        let prints: Vec<Print> = anchors.iter().map(|a| print(a.3.print_seq())).collect();
        let buckets = assign_buckets(&prints);
        for (b, members) in buckets.iter().enumerate() {
            for &i in members {
                for (k, (lo, hi)) in prints[i].iter().enumerate() {
                    for n in 0..16 {
                        tables.lo[b / 8][k][n] |= ((lo >> n & 1) as u8) << (b % 8);
                        tables.hi[b / 8][k][n] |= ((hi >> n & 1) as u8) << (b % 8);
                    }
                }
            }
        }
        let triples = Triples::new(anchors.iter().map(|a| a.3.print_seq()));
        let custom = if custom_lits.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&custom_lits)
                .map_err(|e| e.to_string())?;
            Some((ac, custom_len))
        };
        Ok(Some(Self {
            tables,
            anchors: anchors.into_iter().map(|a| a.3).collect(),
            buckets,
            triples,
            shapes,
            names,
            custom,
            simd: simd(),
        }))
    }

    /// The masks of `hay[at..at + CHUNK]` (zeros past the end).
    #[inline]
    fn chunk(&self, hay: &[u8], at: usize, buckets: &mut Buckets) -> Chunk {
        if at + READ <= hay.len() {
            return self.kernel(&hay[at..], buckets);
        }
        let mut pad = [0u8; READ];
        let rest = &hay[at.min(hay.len())..];
        pad[..rest.len()].copy_from_slice(rest);
        self.kernel(&pad, buckets)
    }

    /// `s` has at least [`READ`] bytes.
    #[inline]
    fn kernel(&self, s: &[u8], buckets: &mut Buckets) -> Chunk {
        assert!(s.len() >= READ);
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        match self.simd {
            // SAFETY: the feature was detected at construction; `s` has at least READ bytes.
            Simd::Avx512 => return unsafe { self.tables.chunk_avx512(s.as_ptr(), buckets) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { self.tables.chunk_avx2(s.as_ptr(), buckets) },
            Simd::Scalar => {}
        }
        self.tables.chunk_scalar(s, buckets)
    }

    /// Merged windows `[lo, hi)` over `hay[from..]` that hold every match starting at or after
    /// `from` (bytes before `from` are look-behind context only).
    pub fn windows(&self, hay: &[u8], from: usize) -> Vec<(usize, usize)> {
        let w = self.windows_by_source(hay, from);
        w.spans.iter().map(|s| (s.lo, s.hi)).collect()
    }

    /// [`Self::windows`], each with the sources (patterns) whose cues made it: no other
    /// pattern has a match inside it (its cues are necessary).
    pub fn windows_by_source(&self, hay: &[u8], from: usize) -> Windows {
        let mut w = Vec::new();
        self.cues(hay, from, &mut w);
        if let Some((ac, lens)) = &self.custom {
            for m in ac.find_overlapping_iter(aho_corasick::Input::new(hay).span(from..hay.len())) {
                let CustomLit { back, fwd, src } = lens[m.pattern().as_usize()];
                w.push((
                    m.start().saturating_sub(back).max(from),
                    (m.start() + fwd).min(hay.len()),
                    src,
                ));
            }
        }
        merge(w)
    }

    fn cues(&self, hay: &[u8], from: usize, w: &mut Vec<(usize, usize, u32)>) {
        let n = hay.len();
        if from >= n {
            return;
        }
        let mut buckets = [[0u8; CHUNK]; GROUPS];
        let mut at = from;
        let mut cur = self.chunk(hay, at, &mut buckets);
        loop {
            // The literals first: the next chunk's masks reuse `buckets`.
            if cur.lits != 0 {
                self.literal_cues(hay, from, at, cur.lits, &buckets, w);
            }
            if let Some(names) = &self.names
                && cur.assign != 0
            {
                names.cues(hay, from, at, cur.assign, w);
            }
            let next_at = at + CHUNK;
            let next = if next_at < n {
                self.chunk(hay, next_at, &mut buckets)
            } else {
                Chunk::default()
            };
            self.shape_cues(hay, from, at, &cur, &next, w);
            if next_at >= n {
                break;
            }
            at = next_at;
            cur = next;
        }
    }

    /// Check the fingerprint hits of one chunk against their cues.
    fn literal_cues(
        &self,
        hay: &[u8],
        from: usize,
        at: usize,
        mut m: u64,
        buckets: &Buckets,
        w: &mut Vec<(usize, usize, u32)>,
    ) {
        let n = hay.len();
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            // Where the fingerprint's three bytes are; each anchor's literal starts `off` before.
            let q = at + i;
            if q + 3 > n {
                continue;
            }
            let mut try_anchor = |ai: usize| {
                let a = &self.anchors[ai];
                if let Some(p) = q.checked_sub(a.off)
                    && let Some(end) = a.at(hay, p, n)
                {
                    a.emit(hay, from, p, end, w);
                }
            };
            match self.triples.begins(&hay[q..q + 3]) {
                Begins::Nothing => {}
                Begins::These(list) => list.iter().for_each(|&ai| try_anchor(ai as usize)),
                Begins::Unknown => {
                    for (g, group) in buckets.iter().enumerate() {
                        let mut bits = group[i];
                        while bits != 0 {
                            let b = 8 * g + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            self.buckets[b].iter().for_each(|&ai| try_anchor(ai));
                        }
                    }
                }
            }
        }
    }

    /// Card numbers, IBANs, SSNs and Discord's dotted tokens starting in one chunk (their
    /// shapes reach at most 16 bytes into the next).
    fn shape_cues(
        &self,
        hay: &[u8],
        from: usize,
        at: usize,
        cur: &Chunk,
        next: &Chunk,
        w: &mut Vec<(usize, usize, u32)>,
    ) {
        let n = hay.len();
        let wide = |a: u64, b: u64| u128::from(a) | u128::from(b) << 64;
        // Bits i.. of a wide mask, as the chunk's 64.
        let at_ = |x: u128, k: u32| (x >> k) as u64;
        let on = |shape: usize| self.shapes[shape].len != 0;
        let mut emit = |mask: u64, shape: usize, first: usize, last: usize, bound: bool| {
            let Shape { len, srcs } = &self.shapes[shape];
            let mut m = mask;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let p = at + i;
                if !bound || boundary_before(hay, p) {
                    for &src in srcs {
                        w.push((
                            p.saturating_sub(first).max(from),
                            (p.saturating_sub(last) + len).min(n),
                            src,
                        ));
                    }
                }
            }
        };
        // A shape's first byte is in this chunk, the rest may be in the next (an IBAN's
        // digits, an SSN's dashes): gate on both chunks.
        if (cur.digit | next.digit) != 0 && (on(SHAPE_CARD) || on(SHAPE_SSN) || on(SHAPE_IBAN)) {
            let d = wide(cur.digit, next.digit);
            let d2 = d & d >> 1;
            let d4 = d2 & d2 >> 2;
            if on(SHAPE_CARD) && d4 as u64 != 0 {
                // Groups of four at +0, +4|5, +8|9|10, then a digit at +12..=15.
                let m = at_(d4, 0)
                    & (at_(d4, 4) | at_(d4, 5))
                    & (at_(d4, 8) | at_(d4, 9) | at_(d4, 10))
                    & (at_(d, 12) | at_(d, 13) | at_(d, 14) | at_(d, 15));
                // Amex's 4-6-5: six digits at +4|5, then five at +10..=12.
                let amex = at_(d4, 0)
                    & (at_(d4, 4) & at_(d2, 8) | at_(d4, 5) & at_(d2, 9))
                    & (at_(d4, 10) | at_(d4, 11) | at_(d4, 12));
                emit(m | amex, SHAPE_CARD, 0, 0, true);
            }
            // The dashes may lie in the next chunk (a number starting at +61..=63).
            if on(SHAPE_SSN) && (cur.dash | next.dash) != 0 {
                let dash = wide(cur.dash, next.dash);
                let m =
                    at_(d2, 0) & at_(d, 2) & at_(dash, 3) & at_(d2, 4) & at_(dash, 6) & at_(d4, 7);
                emit(m, SHAPE_SSN, 0, 0, true);
            }
            if on(SHAPE_IBAN) && cur.upper != 0 {
                let u = wide(cur.upper, next.upper);
                let ud = u | d;
                let ud2 = ud & ud >> 1;
                let ud4 = ud2 & ud2 >> 2;
                let m = at_(u, 0) & at_(u, 1) & at_(d2, 2) & (at_(ud4, 4) | at_(ud4, 5));
                emit(m, SHAPE_IBAN, 0, 0, true);
            }
        }
        if on(SHAPE_DOTS) && cur.dot != 0 {
            let dot = wide(cur.dot, next.dot);
            let t = wide(cur.token, next.token);
            let t2 = t & t >> 1;
            let t6 = t2 & t2 >> 2 & t2 >> 4;
            emit(
                at_(dot, 0) & at_(t6, 1) & at_(dot, 7),
                SHAPE_DOTS,
                26,
                24,
                false,
            );
        }
    }
}

/// Every literal cue's fingerprint (three bytes): a set hashed into 2^16 bits (8 KiB, no false
/// negatives, few positives) that rejects most fingerprint hits, then per triple the anchors
/// it may begin (a hit tries those, not every anchor of its buckets).
struct Triples(Option<TripleIndex>);

struct TripleIndex {
    bits: Box<[u64; 1024]>,
    /// Open addressing by [`Triples::hash`]: (triple | [`TripleIndex::USED`], anchors' range).
    slots: Vec<(u32, u32, u32)>,
    anchors: Vec<u16>,
}

impl TripleIndex {
    const USED: u32 = 1 << 24;
}

/// What a fingerprint hit's three bytes may begin.
enum Begins<'a> {
    Nothing,
    /// These anchors (and no other).
    These(&'a [u16]),
    /// Not indexed: any anchor of the hit's buckets.
    Unknown,
}

impl Triples {
    /// Fingerprints that allow more byte triples than this turn the index off.
    const MAX: usize = 1 << 12;

    fn new<'a>(prints: impl Iterator<Item = &'a [ByteSet]>) -> Self {
        let mut by_triple: std::collections::BTreeMap<u32, Vec<u16>> = Default::default();
        for (ai, p) in prints.enumerate() {
            let sets: Vec<Vec<u8>> = p.iter().map(|s| s.bytes().collect()).collect();
            if sets.iter().map(Vec::len).product::<usize>() > Self::MAX {
                return Triples(None);
            }
            for &a in &sets[0] {
                for &b in &sets[1] {
                    for &c in &sets[2] {
                        by_triple
                            .entry(u32::from_le_bytes([a, b, c, 0]))
                            .or_default()
                            .push(ai as u16);
                    }
                }
            }
        }
        let mut bits = Box::new([0u64; 1024]);
        let size = (by_triple.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![(0u32, 0u32, 0u32); size];
        let mut anchors = Vec::new();
        for (key, list) in by_triple {
            let h = Self::hash(&key.to_le_bytes());
            bits[h >> 6] |= 1 << (h & 63);
            let mut i = h & (size - 1);
            while slots[i].0 != 0 {
                i = (i + 1) & (size - 1);
            }
            slots[i] = (
                key | TripleIndex::USED,
                anchors.len() as u32,
                list.len() as u32,
            );
            anchors.extend(list);
        }
        Triples(Some(TripleIndex {
            bits,
            slots,
            anchors,
        }))
    }

    fn hash(t: &[u8]) -> usize {
        let x = u64::from(t[0]) | u64::from(t[1]) << 8 | u64::from(t[2]) << 16;
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize
    }

    #[inline]
    fn begins(&self, t: &[u8]) -> Begins<'_> {
        let Some(ix) = &self.0 else {
            return Begins::Unknown;
        };
        let h = Self::hash(t);
        if ix.bits[h >> 6] >> (h & 63) & 1 == 0 {
            return Begins::Nothing;
        }
        let key = u32::from_le_bytes([t[0], t[1], t[2], 0]) | TripleIndex::USED;
        let mask = ix.slots.len() - 1;
        let mut i = h & mask;
        loop {
            let (k, start, len) = ix.slots[i];
            if k == key {
                return Begins::These(&ix.anchors[start as usize..(start + len) as usize]);
            }
            if k == 0 {
                return Begins::Nothing;
            }
            i = (i + 1) & mask;
        }
    }
}

/// A cue's Teddy fingerprint: per offset 0..3, the low and high nibbles its bytes use.
type Print = [(u16, u16); 3];

fn print(seq: &[ByteSet]) -> Print {
    let mut p = [(0u16, 0u16); 3];
    for (k, set) in seq.iter().take(3).enumerate() {
        for x in set.bytes() {
            p[k].0 |= 1 << (x & 15);
            p[k].1 |= 1 << (x >> 4);
        }
    }
    p
}

/// Where in `seq` three bytes are least likely in ordinary text ([`frequency`]).
fn rarest_three(seq: &[ByteSet]) -> usize {
    let freq: Vec<f64> = (0..=255u8).map(frequency).collect();
    let rate = |set: &ByteSet| set.bytes().map(|b| freq[b as usize]).sum::<f64>();
    (0..=seq.len() - 3)
        .min_by(|a, b| {
            let r = |k: usize| seq[k..k + 3].iter().map(rate).product::<f64>();
            // The earliest of equals: the fingerprint then finds the literal soonest.
            r(*a).total_cmp(&r(*b)).then(a.cmp(b))
        })
        .unwrap_or(0)
}

/// How often a byte turns up in prose, code and logs (a rough model, relative).
fn frequency(b: u8) -> f64 {
    const LETTERS: &[u8; 26] = b"etaoinsrhldcumfpgwybvkxjqz";
    match b {
        b' ' => 150.0,
        b'a'..=b'z' => {
            80.0 / (1.0 + LETTERS.iter().position(|c| *c == b).unwrap_or(25) as f64 * 0.25)
        }
        b'A'..=b'Z' => 0.1 * frequency(b.to_ascii_lowercase()),
        b'0'..=b'9' => 5.0,
        b'\n' | b'.' | b',' | b'_' | b'-' | b'(' | b')' | b'"' | b':' | b'=' | b'/' => 4.0,
        0x21..=0x7e => 1.0,
        _ => 0.5,
    }
}

/// Spread the cues' 3-byte fingerprints over [`BUCKETS`] buckets so that few ordinary byte
/// triples pass.
/// A bucket lets through every triple its nibble tables allow, including mixes of its cues;
/// each cue goes where it adds the least to the expected rate (most frequent cues first).
fn assign_buckets(prints: &[Print]) -> [Vec<usize>; BUCKETS] {
    let freq: Vec<f64> = (0..=255u8).map(frequency).collect();
    let total: f64 = freq.iter().sum();
    // Expected pass rate of a bucket holding these cues.
    let rate = |members: &[usize]| -> f64 {
        if members.is_empty() {
            return 0.0;
        }
        (0..3)
            .map(|k| {
                let (lo, hi) = members.iter().fold((0u16, 0u16), |(lo, hi), m| {
                    (lo | prints[*m][k].0, hi | prints[*m][k].1)
                });
                (0..=255u8)
                    .filter(|x| lo >> (x & 15) & 1 == 1 && hi >> (x >> 4) & 1 == 1)
                    .map(|x| freq[x as usize])
                    .sum::<f64>()
                    / total
            })
            .product()
    };
    let mut order: Vec<usize> = (0..prints.len()).collect();
    order.sort_by(|a, b| rate(&[*b]).total_cmp(&rate(&[*a])));
    let mut buckets: [Vec<usize>; BUCKETS] = Default::default();
    for i in order {
        let best = (0..BUCKETS)
            .min_by(|x, y| {
                let cost = |b: usize| {
                    let mut with = buckets[b].clone();
                    with.push(i);
                    rate(&with) - rate(&buckets[b])
                };
                cost(*x).total_cmp(&cost(*y))
            })
            .unwrap_or(0);
        buckets[best].push(i);
    }
    buckets
}

/// A custom pattern's literal: how far before it a match may start, how far after its start
/// a match may end, and the source.
#[derive(Clone, Copy)]
struct CustomLit {
    back: usize,
    fwd: usize,
    src: u32,
}

/// The patterns one shape cue stands for, and the longest match among them (0: none).
#[derive(Default)]
struct Shape {
    len: usize,
    srcs: Vec<u32>,
}

impl Shape {
    fn add(&mut self, len: usize, src: u32) {
        self.len = self.len.max(len);
        self.srcs.push(src);
    }
}

const SHAPE_CARD: usize = 0;
const SHAPE_IBAN: usize = 1;
const SHAPE_SSN: usize = 2;
const SHAPE_DOTS: usize = 3;

/// Merged windows, each with the sources whose cues made it.
#[derive(Debug, Default)]
pub struct Windows {
    pub spans: Vec<Span>,
    /// `spans[i].srcs` indexes this: sorted and without repeats within a span.
    pub srcs: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Span {
    pub lo: usize,
    pub hi: usize,
    pub srcs: std::ops::Range<usize>,
}

impl Windows {
    pub fn sources(&self, span: &Span) -> &[u32] {
        &self.srcs[span.srcs.clone()]
    }
}

fn merge(mut w: Vec<(usize, usize, u32)>) -> Windows {
    w.sort_unstable_by_key(|x| (x.0, x.1));
    let mut out = Windows::default();
    for (lo, hi, src) in w {
        if lo >= hi {
            continue;
        }
        match out.spans.last_mut() {
            Some(last) if lo <= last.hi => {
                last.hi = last.hi.max(hi);
                if !out.srcs[last.srcs.clone()].contains(&src) {
                    out.srcs.push(src);
                    last.srcs.end += 1;
                }
            }
            _ => {
                out.srcs.push(src);
                out.spans.push(Span {
                    lo,
                    hi,
                    srcs: out.srcs.len() - 1..out.srcs.len(),
                });
            }
        }
    }
    for s in &out.spans {
        out.srcs[s.srcs.clone()].sort_unstable();
    }
    out
}

fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512bw") {
            return Simd::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Scalar
}

#[cfg(test)]
mod tests;
