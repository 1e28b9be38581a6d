//! JSON parsed as strictly as the strictest reader of it: a key given twice in one object is
//! an error (one reader takes the first, another the last — the copy scanned must be the copy
//! sent). Escapes are decoded by the parser, so `\u0067hp_` is scanned as `ghp_`.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = a.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let v = a.next_value_seed(Strict)?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

const DUPLICATE: &str = "an object has the same key twice";

#[derive(Debug)]
pub enum JsonError {
    /// A key twice in one object (which copy a reader takes differs).
    Duplicate,
    Syntax(String),
}

/// Parse a whole JSON text, refusing duplicate keys.
pub fn parse(b: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(b);
    let v = Strict.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(v)
}

fn classify(e: serde_json::Error) -> JsonError {
    if e.to_string().starts_with(DUPLICATE) {
        JsonError::Duplicate
    } else {
        JsonError::Syntax(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth_and_in_any_spelling() {
        for b in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"x": [{"k": "v", "k": "w"}]}"#,
            r#"{"model": "m", "\u006dodel": "n"}"#,
            r#"{"a": {"b": 1}, "c": {"d": 1, "d": {}}}"#,
        ] {
            assert!(
                matches!(parse(b.as_bytes()), Err(JsonError::Duplicate)),
                "{b}"
            );
        }
        let v =
            parse(br#"{"a": {"a": 1}, "s": "\u0067hp_x", "n": 12345678901234567890, "f": 0.1}"#)
                .unwrap();
        assert_eq!(v["s"], "ghp_x");
        assert_eq!(v["n"].as_u64(), Some(12345678901234567890));
        assert!(matches!(parse(b"{\"a\": 1} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(
            parse(b"{\"a\": \"\\ud800\"}"),
            Err(JsonError::Syntax(_))
        ));
        // Nesting beyond serde_json's limit is an error, not a stack overflow.
        let deep = "[".repeat(10_000);
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Syntax(_))));
    }
}
