//! The streaming masker against whole-text masking: `StreamMasker` fed any text cut anywhere
//! must release exactly `Scanner::mask` of the whole text (DESIGN §6: a secret split across
//! events is still masked, and nothing else changes).
#![no_main]

use std::sync::{Arc, OnceLock};

use gateway::{
    policy::scan::{Action, Ctx, Direction, PolicyConfig, RuleConfig, Scanner, StreamMasker},
    redirect::identity::Identity,
};
use gateway_fuzz::{SECRETS, cut_text, plant};
use libfuzzer_sys::{arbitrary, fuzz_target};

/// Every built-in detector, plus custom rules that hit often: one with a secret group, one
/// with an allow-list, one that only monitors.
fn scanner() -> Arc<Scanner> {
    static S: OnceLock<Arc<Scanner>> = OnceLock::new();
    S.get_or_init(|| {
        let rule = |name: &str, detector: Option<&str>, pattern: Option<&str>, action| RuleConfig {
            name: name.into(),
            detector: detector.map(String::from),
            pattern: pattern.map(String::from),
            on: vec![Direction::Request, Direction::Response],
            action,
            replacement: None,
            allow: if name == "cust" {
                vec!["CUST-00000000".into()]
            } else {
                Vec::new()
            },
            allow_regex: Vec::new(),
            who: None,
        };
        let rules = [
            rule("builtin", Some("all"), None, Action::Mask),
            rule("cust", None, Some("CUST-[0-9]{8}"), Action::Mask),
            rule(
                "kv",
                None,
                Some("(?:token|key)=(?P<s>[a-z0-9]{4,12})"),
                Action::Mask,
            ),
            rule("ab", None, Some("a[ab]{1,6}b"), Action::Mask),
            rule("watch", None, Some("watch-[0-9]{3}"), Action::Monitor),
        ];
        Arc::new(Scanner::new(&rules, &PolicyConfig::default()).expect("rules compile"))
    })
    .clone()
}

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    text: String,
    plant: Option<(u8, u16)>,
    cuts: Vec<u8>,
}

fuzz_target!(|inp: Input| {
    let text = match inp.plant {
        Some((s, at)) => plant(
            &inp.text,
            usize::from(at),
            SECRETS[usize::from(s) % SECRETS.len()],
        ),
        None => inp.text,
    };
    let scanner = scanner();
    let id = Arc::new(Identity::default());
    let whole = scanner
        .mask(
            &text,
            Ctx {
                dir: Direction::Response,
                id: &id,
            },
        )
        .0;
    let mut m = StreamMasker::new(scanner.clone(), Direction::Response, id.clone());
    let mut streamed = String::new();
    for piece in cut_text(&text, &inp.cuts) {
        streamed.push_str(&m.push(&piece));
        assert!(
            m.held() <= scanner.max_len + piece.len() + 8,
            "held {} bytes",
            m.held()
        );
    }
    streamed.push_str(&m.finish());
    assert_eq!(
        streamed, whole,
        "streamed masking differs from whole-text masking"
    );
});
