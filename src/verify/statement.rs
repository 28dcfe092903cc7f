//! In-toto Statements as attestation conditions read them: a verified
//! statement's predicate type, subjects and body, converted once into the
//! values a condition is evaluated over (`statement`, `predicate`,
//! `predicateType`, `subject`). Size-capped; JSON integers are CEL ints
//! (uints past `i64`), other numbers doubles.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::value::Val;
use serde_json::Value as Json;

/// A statement larger than this is refused before it is read (a huge
/// predicate, an SBOM of the whole world): the bound every condition's
/// cost is computed against.
pub const MAX_STATEMENT: usize = 1 << 20;

/// A statement, read and converted.
pub struct Statement {
    pub predicate_type: String,
    /// `(<algorithm>:<hex>, name)` for each subject digest.
    pub subjects: Vec<(String, String)>,
    /// The values conditions see, each converted once.
    pub(crate) statement: Box<dyn Val>,
    pub(crate) predicate: Box<dyn Val>,
    pub(crate) predicate_type_val: Box<dyn Val>,
    pub(crate) subject: Box<dyn Val>,
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statement")
            .field("predicate_type", &self.predicate_type)
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

impl Statement {
    /// Reads a DSSE payload as an in-toto Statement (v0.1 or v1).
    pub fn read(payload: &[u8]) -> Result<Statement, String> {
        if payload.len() > MAX_STATEMENT {
            return Err(format!(
                "the statement is {} bytes, more than the {MAX_STATEMENT} read",
                payload.len()
            ));
        }
        let subjects = crate::verify::bundle::subjects(payload)?;
        let json: Json = serde_json::from_slice(payload)
            .map_err(|e| format!("the statement cannot be read: {e}"))?;
        let predicate_type = match json.get("predicateType") {
            Some(Json::String(t)) => t.clone(),
            _ => return Err("the statement has no predicateType".into()),
        };
        let get = |k: &str| json.get(k).map_or(cel::Value::Null, to_cel);
        let boxed = |v: cel::Value| -> Result<Box<dyn Val>, String> {
            v.try_into()
                .map_err(|e: cel::ExecutionError| format!("the statement cannot be read: {e}"))
        };
        Ok(Statement {
            predicate: boxed(get("predicate"))?,
            subject: boxed(get("subject"))?,
            predicate_type_val: boxed(cel::Value::String(Arc::new(predicate_type.clone())))?,
            statement: boxed(to_cel(&json))?,
            predicate_type,
            subjects,
        })
    }
}

/// JSON as CEL values.
fn to_cel(v: &Json) -> cel::Value {
    match v {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(o) => {
            let map: HashMap<cel::objects::Key, cel::Value> = o
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_read_and_capped() {
        let s = Statement::read(
            br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"AB"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"n":1}}"#,
        )
        .unwrap();
        assert_eq!(s.predicate_type, "https://slsa.dev/provenance/v1");
        assert_eq!(s.subjects, [("sha256:ab".to_string(), "a".to_string())]);
        assert!(Statement::read(br#"{"_type":"x","subject":[]}"#).is_err());
        assert!(
            Statement::read(br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#)
                .unwrap_err()
                .contains("predicateType")
        );
        let huge = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x","predicate":"{}"}}"#,
            "a".repeat(MAX_STATEMENT)
        );
        assert!(
            Statement::read(huge.as_bytes())
                .unwrap_err()
                .contains("more than")
        );
    }
}
