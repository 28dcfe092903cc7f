//! JSON for configuration files, read strictly: a key given twice in one
//! object is a problem, reported with its JSON path, not silently the last
//! one (`{"mode":"enforce","mode":"warn"}` would otherwise be warn mode).
//!
//! It builds the same `serde_json::Value` as `serde_json::from_str`; it
//! does not interpret any key (`config.rs` does).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text`; duplicate keys are returned as problems (`$.mode: the key
/// is given twice`), all of them, beside the value.
pub fn parse(text: &str) -> Result<(Value, Vec<String>), serde_json::Error> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Seed {
        path: "$".to_string(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates))
}

/// Decodes one value at `path`, recording duplicate keys below it.
struct Seed<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = Seed {
                path: format!("{}[{}]", self.path, items.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}.{key}", self.path);
            if out.contains_key(&key) {
                self.duplicates
                    .push(format!("{path}: the key is given twice (each key once)"));
            }
            let value = map.next_value_seed(Seed {
                path,
                duplicates: &mut *self.duplicates,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_as_serde_json_and_every_duplicate_with_its_path() {
        let text = r#"{"a":[1,{"b":true,"b":null}],"mode":"enforce","mode":"warn","m":{"x":"1","x":"2","y":-1.5}}"#;
        let (v, dups) = parse(text).unwrap();
        let plain: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v, plain);
        assert_eq!(
            dups,
            vec![
                "$.a[1].b: the key is given twice (each key once)",
                "$.mode: the key is given twice (each key once)",
                "$.m.x: the key is given twice (each key once)",
            ]
        );
        assert!(parse(r#"{"a":1}"#).unwrap().1.is_empty());
        assert!(parse(r#"{"a":1} x"#).is_err());
        assert!(parse(r#"{"a":"#).is_err());
    }
}
