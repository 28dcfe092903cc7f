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
/// Values (JSON nodes) converted at most: what converting one statement
/// may hold in memory (a few tens of MB).
pub const MAX_VALUES: usize = 200_000;

/// Which of a statement's values the conditions that read it use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    pub statement: bool,
    pub predicate: bool,
    pub subject: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.statement || self.predicate || self.subject
    }

    pub fn or(self, other: Needs) -> Needs {
        Needs {
            statement: self.statement || other.statement,
            predicate: self.predicate || other.predicate,
            subject: self.subject || other.subject,
        }
    }
}

/// A statement, read and converted.
pub struct Statement {
    pub predicate_type: String,
    /// `(<algorithm>:<hex>, name)` for each subject digest.
    pub subjects: Vec<(String, String)>,
    /// The values conditions see, each converted once, those needed only.
    pub(crate) statement: Option<Box<dyn Val>>,
    pub(crate) predicate: Option<Box<dyn Val>>,
    pub(crate) predicate_type_val: Box<dyn Val>,
    pub(crate) subject: Option<Box<dyn Val>>,
    /// How many values were converted.
    pub values: usize,
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
    /// Reads a DSSE payload as an in-toto Statement (v0.1 or v1),
    /// converting the values `needs` says conditions read.
    pub fn read(payload: &[u8], needs: Needs) -> Result<Statement, String> {
        if payload.len() > MAX_STATEMENT {
            return Err(format!(
                "the statement is {} bytes, more than the {MAX_STATEMENT} read",
                payload.len()
            ));
        }
        let json: Json = serde_json::from_slice(payload)
            .map_err(|e| format!("the statement cannot be read: {e}"))?;
        let subjects = crate::verify::bundle::subjects_in(&json)?;
        let predicate_type = match json.get("predicateType") {
            Some(Json::String(t)) => t.clone(),
            _ => return Err("the statement has no predicateType".into()),
        };
        let boxed = |v: cel::Value| -> Result<Box<dyn Val>, String> {
            v.try_into()
                .map_err(|e: cel::ExecutionError| format!("the statement cannot be read: {e}"))
        };
        let mut values = 0;
        let mut convert = |want: bool, v: Option<&Json>| -> Result<Option<Box<dyn Val>>, String> {
            if !want {
                return Ok(None);
            }
            let v = v.unwrap_or(&Json::Null);
            values += count(v);
            if values > MAX_VALUES {
                return Err(format!(
                    "the statement holds more than {MAX_VALUES} values, more than a condition reads"
                ));
            }
            boxed(to_cel(v)).map(Some)
        };
        Ok(Statement {
            statement: convert(needs.statement, Some(&json))?,
            predicate: convert(needs.predicate, json.get("predicate"))?,
            subject: convert(needs.subject, json.get("subject"))?,
            predicate_type_val: boxed(cel::Value::String(Arc::new(predicate_type.clone())))?,
            predicate_type,
            subjects,
            values,
        })
    }

    /// The same statement without its converted values (what a verdict
    /// keeps once its conditions are judged for good).
    pub fn light(&self) -> Statement {
        Statement {
            predicate_type: self.predicate_type.clone(),
            subjects: self.subjects.clone(),
            statement: None,
            predicate: None,
            predicate_type_val: self.predicate_type_val.clone(),
            subject: None,
            values: 0,
        }
    }
}

/// The predicate type of an in-toto statement, read without converting
/// anything else.
pub fn predicate_type(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "predicateType")]
        predicate_type: String,
    }
    serde_json::from_slice::<Typed>(payload)
        .ok()
        .map(|t| t.predicate_type)
}

/// The values of a JSON tree.
fn count(v: &Json) -> usize {
    1 + match v {
        Json::Array(a) => a.iter().map(count).sum(),
        Json::Object(o) => o.values().map(count).sum(),
        _ => 0,
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
        let all = Needs {
            statement: true,
            predicate: true,
            subject: true,
        };
        let s = Statement::read(
            br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"AB"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"n":1}}"#,
            all,
        )
        .unwrap();
        assert_eq!(s.values, 10 + 2 + 5);
        assert_eq!(s.predicate_type, "https://slsa.dev/provenance/v1");
        assert_eq!(s.subjects, [("sha256:ab".to_string(), "a".to_string())]);
        assert!(Statement::read(br#"{"_type":"x","subject":[]}"#, all).is_err());
        assert!(
            Statement::read(
                br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#,
                all
            )
            .unwrap_err()
            .contains("predicateType")
        );
        // Nothing needed, nothing converted.
        let light = Statement::read(
            br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"t","predicate":[1,2,3]}"#,
            Needs::default(),
        )
        .unwrap();
        assert_eq!((light.values, light.predicate.is_none()), (0, true));
        let many = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x","predicate":[{}]}}"#,
            vec!["0"; MAX_VALUES + 1].join(",")
        );
        assert!(
            Statement::read(many.as_bytes(), all)
                .unwrap_err()
                .contains("values")
        );
        assert!(Statement::read(many.as_bytes(), Needs::default()).is_ok());
        let huge = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x","predicate":"{}"}}"#,
            "a".repeat(MAX_STATEMENT)
        );
        assert!(
            Statement::read(huge.as_bytes(), all)
                .unwrap_err()
                .contains("more than")
        );
    }
}
