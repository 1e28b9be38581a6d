//! The prefilter must never lose a match: every sampled match of every detector lies in a
//! window, the scanner finds the same hits with and without it, and the AVX2 kernel agrees
//! with the scalar one byte for byte.

use rand::{Rng, SeedableRng, rngs::StdRng};
use regex_automata::{Input, meta};
use regex_syntax::hir::{Class, Hir, HirKind};

use super::*;
use crate::{
    policy::{
        detect::DETECTORS,
        scan::{Ctx, Direction, PolicyConfig, RuleConfig, Scanner},
    },
    redirect::identity::Identity,
};

fn parse(p: &str) -> Hir {
    crate::policy::scan::parse_pattern(p).expect("pattern parses")
}

fn max_len(p: &str) -> usize {
    parse(p).properties().maximum_len().expect("bounded")
}

/// Append a random string the pattern `h` matches (look-arounds are left to the context).
fn sample(h: &Hir, rng: &mut StdRng, out: &mut Vec<u8>) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.extend_from_slice(&l.0),
        HirKind::Class(Class::Bytes(c)) => {
            let all: Vec<u8> = c.iter().flat_map(|r| r.start()..=r.end()).collect();
            out.push(all[rng.random_range(0..all.len())]);
        }
        HirKind::Class(Class::Unicode(c)) => {
            let all: Vec<char> = c
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .take(4096)
                .collect();
            let ch = all[rng.random_range(0..all.len())];
            out.extend_from_slice(ch.to_string().as_bytes());
        }
        HirKind::Repetition(r) => {
            let max = r.max.unwrap_or(r.min + 8);
            let n = match rng.random_range(0..4) {
                0 => r.min,
                1 => max,
                _ => rng.random_range(r.min..=max.min(r.min + 12)),
            };
            for _ in 0..n {
                sample(&r.sub, rng, out);
            }
        }
        HirKind::Capture(c) => sample(&c.sub, rng, out),
        HirKind::Concat(v) => v.iter().for_each(|h| sample(h, rng, out)),
        HirKind::Alternation(v) => sample(&v[rng.random_range(0..v.len())], rng, out),
    }
}

/// Text around a sample: nothing, separators, word bytes, or arbitrary printable ASCII.
fn context(rng: &mut StdRng, out: &mut Vec<u8>) {
    const PIECES: &[&[u8]] = &[
        b"", b" ", b"\n", b"\"", b"x", b"_", b"-", b".", b"=", b"key=", b"token: ", b"1234",
    ];
    for _ in 0..rng.random_range(0..4) {
        if rng.random_bool(0.7) {
            out.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
        } else {
            out.push(rng.random_range(0x20..0x7f));
        }
    }
}

/// Mostly a non-word byte, so that `\b` around a sample usually holds.
fn separator(rng: &mut StdRng, out: &mut Vec<u8>) {
    if rng.random_bool(0.7) {
        const SEP: &[u8] = b" \n\"'=.,;:/";
        out.push(SEP[rng.random_range(0..SEP.len())]);
    }
}

fn all_sources() -> Vec<(Vec<Cue>, usize)> {
    DETECTORS
        .iter()
        .map(|d| (d.cues.to_vec(), max_len(d.pattern)))
        .collect()
}

fn prefilter_of(src: &[(Vec<Cue>, usize)], simd: bool) -> Prefilter {
    let sources: Vec<Source<'_>> = src.iter().map(|(c, l)| Source::Cues(c, *l)).collect();
    let mut pf = Prefilter::new(&sources)
        .expect("cues parse")
        .expect("every detector has cues");
    if !simd {
        pf.simd = Simd::Scalar;
    }
    pf
}

fn covered(windows: &[(usize, usize)], s: usize, e: usize) -> bool {
    windows.iter().any(|(lo, hi)| *lo <= s && e <= *hi)
}

#[test]
fn every_sampled_match_of_every_detector_lies_in_a_window() {
    let src = all_sources();
    let both = [prefilter_of(&src, true), prefilter_of(&src, false)];
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for d in DETECTORS {
        let hir = parse(d.pattern);
        let alone = [prefilter_of(
            &[(d.cues.to_vec(), max_len(d.pattern))],
            false,
        )];
        let re = meta::Regex::builder()
            .syntax(
                regex_automata::util::syntax::Config::new()
                    .unicode(false)
                    .utf8(false),
            )
            .build(d.pattern)
            .unwrap();
        let mut matched = 0;
        for round in 0..400 {
            let mut text = Vec::new();
            // Every other sample starts near the end of the prefilter's first 64-byte chunk,
            // so that what its cue needs straddles two chunks.
            if round % 2 == 1 {
                text.resize(rng.random_range(40..=64), b' ');
            }
            context(&mut rng, &mut text);
            separator(&mut rng, &mut text);
            sample(&hir, &mut rng, &mut text);
            separator(&mut rng, &mut text);
            context(&mut rng, &mut text);
            // From 0, and from inside the text (the streaming masker's case).
            let from = if round % 4 == 3 {
                rng.random_range(0..=text.len().min(6))
            } else {
                0
            };
            let mut at = from;
            while let Some(m) = re.search(&Input::new(&text).range(at..)) {
                matched += 1;
                for pf in both.iter().chain(&alone) {
                    let w = pf.windows(&text, from);
                    assert!(
                        covered(&w, m.start(), m.end()),
                        "{}: match {}..{} of {:?} (from {from}) outside the windows {w:?} ({:?})",
                        d.name,
                        m.start(),
                        m.end(),
                        String::from_utf8_lossy(&text),
                        pf.simd,
                    );
                }
                at = m.start() + 1;
            }
        }
        // The sampler must actually produce matches, or the test proves nothing.
        assert!(
            matched >= 200,
            "{}: only {matched} of 400 samples matched",
            d.name
        );
    }
}

#[test]
fn the_scanner_finds_the_same_hits_with_and_without_the_prefilter() {
    let sc = Scanner::new(&[], &PolicyConfig::default()).unwrap();
    assert!(sc.has_prefilter());
    let id = Identity::default();
    let ctx = Ctx {
        dir: Direction::Response,
        id: &id,
    };
    let vectors = crate::policy::scan::tests::vectors();
    let prose: &[&str] = &[
        "The deployment uses an S3 bucket; commit 3f786850e387550fdab836ed7e6dc881de23001b.\n",
        "request 123e4567-e89b-12d3-a456-426614174000 took 35 ms; call 555-12-3456 or 4111.\n",
        "let api_key = os.environ[\"KEY\"]; password: hunter2 secret=\n",
        "postgres://app:s3cr3t-Pa55@db:5432/x https://discord.com/api/webhooks/1 -----BEGIN x\n",
    ];
    let hirs: Vec<Hir> = DETECTORS.iter().map(|d| parse(d.pattern)).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut total = 0;
    for _ in 0..300 {
        let mut text = Vec::new();
        while text.len() < 3000 {
            match rng.random_range(0..5) {
                0 => text.extend_from_slice(prose[rng.random_range(0..prose.len())].as_bytes()),
                1 => {
                    let v = &vectors[rng.random_range(0..vectors.len())];
                    let s = if rng.random_bool(0.5) { &v.1 } else { &v.3 };
                    text.extend_from_slice(s.as_bytes());
                }
                2 => sample(&hirs[rng.random_range(0..hirs.len())], &mut rng, &mut text),
                _ => context(&mut rng, &mut text),
            }
        }
        for from in [0, rng.random_range(0..text.len() / 2)] {
            let want = sc.find_everywhere(&text, from, ctx);
            let text_ = String::from_utf8_lossy(&text);
            assert_eq!(
                sc.find_windowed(&text, from, ctx),
                want,
                "{text_:?} from {from}"
            );
            assert_eq!(sc.find(&text, from, ctx), want, "{text_:?} from {from}");
            total += want.len();
        }
    }
    assert!(
        total > 1000,
        "only {total} hits: the texts do not exercise the detectors"
    );
}

#[test]
fn the_vector_kernels_agree_with_the_scalar_one() {
    let src = all_sources();
    let pf = prefilter_of(&src, true);
    let detected = super::simd();
    eprintln!("this CPU: {detected:?}");
    let avx2 = std::is_x86_feature_detected!("avx2");
    let avx512 = std::is_x86_feature_detected!("avx512bw");
    let mut rng = StdRng::seed_from_u64(99);
    let alphabet = b"0123456789abcdefABCDEFKQSGT_-.:~=\"' \n\x00\xff";
    for _ in 0..10_000 {
        let s: Vec<u8> = (0..READ)
            .map(|_| {
                if rng.random_bool(0.5) {
                    alphabet[rng.random_range(0..alphabet.len())]
                } else {
                    rng.random()
                }
            })
            .collect();
        let mut want_buckets = [[0u8; CHUNK]; GROUPS];
        let want = pf.tables.chunk_scalar(&s, &mut want_buckets);
        let mut got = [[0u8; CHUNK]; GROUPS];
        if avx2 {
            #[allow(unsafe_code)]
            // SAFETY: AVX2 is present (checked above); `s` has READ bytes.
            let fast = unsafe { pf.tables.chunk_avx2(s.as_ptr(), &mut got) };
            assert_eq!((fast, got), (want, want_buckets), "avx2 {s:?}");
        }
        if avx512 {
            #[allow(unsafe_code)]
            // SAFETY: AVX-512BW is present (checked above); `s` has READ bytes.
            let fast = unsafe { pf.tables.chunk_avx512(s.as_ptr(), &mut got) };
            assert_eq!((fast, got), (want, want_buckets), "avx512 {s:?}");
        }
    }
}

#[test]
fn custom_patterns_use_their_prefix_literals_or_turn_the_prefilter_off() {
    let rule = |name: &str, pattern: &str| -> RuleConfig {
        serde_json::from_value(serde_json::json!({"name": name, "pattern": pattern})).unwrap()
    };
    let all: RuleConfig =
        serde_json::from_value(serde_json::json!({"name": "builtin", "detector": "all"})).unwrap();
    let with_lits = Scanner::new(
        &[rule("ticket", r"(?i:tkt|ticket)-[0-9]{6}"), all],
        &PolicyConfig::default(),
    )
    .unwrap();
    assert!(with_lits.has_prefilter());
    let no_lits = Scanner::new(
        &[rule("digits", r"[a-z]{2}-[0-9]{6}")],
        &PolicyConfig::default(),
    )
    .unwrap();
    assert!(!no_lits.has_prefilter());
    let id = Identity::default();
    let ctx = Ctx {
        dir: Direction::Request,
        id: &id,
    };
    let mut text = "filler text without anything. ".repeat(20);
    text.push_str("see TiCkEt-123456 and tkt-654321, also ghp_");
    text.push_str(&"a1".repeat(18));
    text.push_str(" end");
    assert_eq!(
        with_lits.find_windowed(text.as_bytes(), 0, ctx),
        with_lits.find_everywhere(text.as_bytes(), 0, ctx)
    );
    assert_eq!(
        no_lits.find(text.as_bytes(), 0, ctx),
        no_lits.find_everywhere(text.as_bytes(), 0, ctx)
    );
    let hits = with_lits.find(text.as_bytes(), 0, ctx);
    let names: Vec<&str> = hits.iter().map(|h| h.detector).collect();
    assert_eq!(
        names,
        ["pattern", "pattern", "github-classic-token"],
        "{hits:?}"
    );
}

#[test]
fn bad_cues_are_refused() {
    for (text, why) in [("ab", "shorter"), ("[ab", "without"), ("a\0b", "NUL")] {
        let cues = [lit(text)];
        let err = Prefilter::new(&[Source::Cues(&cues, 10)])
            .err()
            .expect("refused");
        assert!(err.contains(why), "{text}: {err}");
    }
    let cues = [lit("abc").back(2).wb()];
    assert!(Prefilter::new(&[Source::Cues(&cues, 10)]).is_err());
}

/// A keyword in a name is found from the assignment after it, written any way `named!`
/// allows, wherever the chunks split it; one name byte too many, or no assignment, and it is
/// not (so the cue is no wider than it says).
#[test]
fn a_keyword_in_a_name_is_found_from_its_assignment() {
    let cues = [lit("heroku").ci().back(1).named()];
    let pf = Prefilter::new(&[Source::Cues(&cues, 80)]).unwrap().unwrap();
    let tail = "x".repeat(NAME_TAIL);
    let found = [
        "HEROKU_API_KEY=abc".to_string(),
        "\"heroku_token\"    : \"abc\"".to_string(),
        "heroku-key := abc".to_string(),
        "Heroku.Key=>abc".to_string(),
        format!("heroku{tail}=abc"),
    ];
    let not_found = [
        format!("heroku{tail}x=abc"),
        "heroku api key = abc".to_string(),
        "HEROKU_API_KEY     =abc".to_string(),
        "the heroku dashboard".to_string(),
    ];
    for pad in 0..70 {
        for (text, want) in found
            .iter()
            .map(|t| (t, true))
            .chain(not_found.iter().map(|t| (t, false)))
        {
            let hay = format!("{}{text}", " ".repeat(pad));
            let at = pad + text.to_ascii_lowercase().find("heroku").unwrap();
            let got = pf
                .windows(hay.as_bytes(), 0)
                .iter()
                .any(|(lo, hi)| *lo <= at && at < *hi);
            assert_eq!(got, want, "{hay:?}");
        }
    }
    let bad = [lit("her oku").ci().named()];
    let err = Prefilter::new(&[Source::Cues(&bad, 80)])
        .err()
        .expect("refused");
    assert!(err.contains("her oku") && err.contains("no name"), "{err}");
}

/// Vault keys as detectors: the prefilter's windows around a key's 8-byte pieces hold every
/// match of the key or of any piece of it (24 bytes or more), wherever the piece starts.
#[test]
fn vault_key_pieces_lie_in_the_prefilters_windows() {
    let keys = [
        "sk-vault-policy-openai-51-Zq8Xw2Lm4Nb6Vc1Kj3Hg5Fd7",
        "AIza-vault-gemini-Yy7Tt6Rr5Ee4Ww3Qq2Aa1Ss0Dd9Ff8Gg7Hh6",
    ];
    let secrets: Vec<crate::vault::Secret> =
        keys.iter().map(|k| crate::vault::Secret::new(*k)).collect();
    let started = std::time::Instant::now();
    let sc = Scanner::with_keys(&[], &PolicyConfig::default(), &secrets).unwrap();
    eprintln!("scanner with 2 vault keys built in {:?}", started.elapsed());
    assert!(sc.has_prefilter(), "vault keys keep the prefilter on");
    let id = Identity::default();
    let ctx = Ctx {
        dir: Direction::Response,
        id: &id,
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut found = 0;
    for _ in 0..400 {
        let mut text = Vec::new();
        while text.len() < 2000 {
            match rng.random_range(0..3) {
                0 => {
                    let k = keys[rng.random_range(0..keys.len())].as_bytes();
                    let a = rng.random_range(0..k.len() - 20);
                    let b = rng.random_range(a + 20..=k.len());
                    text.extend_from_slice(&k[a..b]);
                }
                _ => context(&mut rng, &mut text),
            }
        }
        let want = sc.find_everywhere(&text, 0, ctx);
        found += want.iter().filter(|h| h.detector == "vault-key").count();
        assert_eq!(sc.find_windowed(&text, 0, ctx), want);
        assert_eq!(sc.find(&text, 0, ctx), want);
    }
    assert!(found > 200, "pieces found: {found}");
}
