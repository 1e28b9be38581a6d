//! The request stage's walker (`request::Inspector::inspect`): any body, any content type,
//! never panics. And a JSON request whose strings carry a planted secret — anywhere in the
//! document, keys too, some characters written as `\u` escapes — either is refused or goes
//! upstream with the secret in no string of it.
#![no_main]

use gateway::{
    policy::scan::{Ctx, Direction, Unreadable},
    redirect::identity::Identity,
    request::Inspector,
};
use gateway_fuzz::{SECRETS, contains, plant, scanner};
use libfuzzer_sys::{arbitrary, fuzz_target};
use serde_json::Value;

#[derive(arbitrary::Arbitrary, Debug)]
enum Doc {
    Text(String),
    List(Vec<Doc>),
    Map(Vec<(String, Doc)>),
    Num(i32),
}

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    raw: Option<(Vec<u8>, String, bool)>,
    doc: Doc,
    secret: u8,
    at: u16,
    /// Which string gets the secret (counted in document order), and whether it is a key.
    target: u8,
    in_key: bool,
    /// Characters of the secret written as `\u` escapes (bit i: the i-th character).
    escapes: u64,
}

/// `s` as a JSON string; the secret planted in it when it is the `target`-th string (or key).
fn put_string(s: &str, key: bool, n: &mut usize, inp: &Input, secret: &str, out: &mut String) {
    let here = *n == usize::from(inp.target) && key == inp.in_key;
    *n += usize::from(key == inp.in_key);
    if !here {
        out.push_str(&Value::from(s).to_string());
        return;
    }
    let planted = plant(s, usize::from(inp.at), secret);
    let (a, b) = planted.split_once(secret).expect("planted");
    let a = Value::from(a).to_string();
    let b = Value::from(b).to_string();
    out.push_str(a.strip_suffix('"').expect("a JSON string"));
    for (i, c) in secret.chars().enumerate() {
        if inp.escapes >> (i % 64) & 1 == 1 {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.push_str(b.strip_prefix('"').expect("a JSON string"));
}

/// The document as JSON with the secret planted in its `target`-th string (or key).
fn render(d: &Doc, n: &mut usize, inp: &Input, secret: &str, out: &mut String) {
    match d {
        Doc::Text(s) => put_string(s, false, n, inp, secret, out),
        Doc::Num(i) => out.push_str(&i.to_string()),
        Doc::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(it, n, inp, secret, out);
            }
            out.push(']');
        }
        Doc::Map(kvs) => {
            out.push('{');
            let mut seen = std::collections::HashSet::new();
            let mut first = true;
            for (k, v) in kvs {
                if !seen.insert(k) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                put_string(k, true, n, inp, secret, out);
                out.push(':');
                render(v, n, inp, secret, out);
            }
            out.push('}');
        }
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}

fuzz_target!(|inp: Input| {
    let scanner = scanner();
    let id = Identity::default();
    let ins = |unreadable| Inspector {
        scanner: &scanner,
        ctx: Ctx {
            dir: Direction::Request,
            id: &id,
        },
        unreadable,
    };
    if let Some((body, ct, raw)) = &inp.raw {
        let how = if *raw {
            Unreadable::ScanRaw
        } else {
            Unreadable::Refuse
        };
        let _ = ins(how).inspect(body, &ct.to_ascii_lowercase());
        return;
    }
    let secret = SECRETS[usize::from(inp.secret) % SECRETS.len()];
    // The document, wrapped so there is always a string to plant the secret in.
    let doc = Doc::Map(vec![
        ("model".into(), Doc::Text("m".into())),
        (
            "input".into(),
            Doc::List(vec![Doc::Text(String::new()), Doc::List(Vec::new())]),
        ),
    ]);
    let doc = match &inp.doc {
        Doc::Map(_) | Doc::List(_) => &inp.doc,
        _ => &doc,
    };
    let mut body = String::new();
    let mut n = 0;
    render(doc, &mut n, &inp, secret, &mut body);
    if n <= usize::from(inp.target) {
        // Fewer strings than the target: plant into the wrapper's first string instead.
        let mut n = 0;
        let probe = Input {
            target: 0,
            in_key: false,
            ..inp
        };
        body.clear();
        let wrap = Doc::List(vec![Doc::Text(String::new())]);
        render(&wrap, &mut n, &probe, secret, &mut body);
    }
    // Deeper than serde_json nests (128): not a document this target means to build.
    if serde_json::from_str::<Value>(&body).is_err() {
        return;
    }
    let Ok(out) = ins(Unreadable::Refuse).inspect(body.as_bytes(), "application/json") else {
        return;
    };
    let sent = out
        .forward
        .clone()
        .unwrap_or_else(|| body.clone().into_bytes());
    assert!(
        !contains(&sent, secret),
        "secret sent raw: {}",
        String::from_utf8_lossy(&sent)
    );
    let v: Value = serde_json::from_slice(&sent).expect("what is sent is JSON");
    let mut all = Vec::new();
    strings(&v, &mut all);
    for s in all {
        assert!(!s.contains(secret), "secret sent in a string: {s:?}");
    }
});
