//! YAML documents as `serde_json::Value`s, for `check -f` and YAML policy
//! files: what admins keep in git is YAML, often several documents in one
//! file (`---`).
//!
//! Built on yaml-rust2's event parser, so that the tree is ours: aliases
//! are refused (a few bytes of `*a` can expand to gigabytes), nesting is
//! bounded, and plain scalars are typed by the YAML 1.2 core schema (what
//! `kubectl` does). Tags are ignored. It decides nothing.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper than any Kubernetes object.
const DEPTH_MAX: usize = 128;

/// Every document of `text`, in order (empty documents are left out).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    read(text, Builder::default())
}

/// A policy file's one document, read as strictly as a JSON policy: an
/// anchor (`&name`) is refused too, not only an alias, and so is a second
/// document.
pub fn policy_document(text: &str) -> Result<Value, String> {
    let b = Builder {
        no_anchors: true,
        ..Builder::default()
    };
    let mut docs = read(text, b)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err("the file holds no YAML document".to_string()),
        n => Err(format!(
            "the file holds {n} YAML documents; a policy file holds one (split them into files)"
        )),
    }
}

fn read(text: &str, mut b: Builder) -> Result<Vec<Value>, String> {
    Parser::new_from_str(text)
        .load(&mut b, true)
        .map_err(|e| e.to_string())?;
    match b.error {
        Some(e) => Err(e),
        None => Ok(b.docs),
    }
}

/// A container being filled; a mapping waits for its key's value.
enum Open {
    Seq(Vec<Value>),
    Map(Map<String, Value>, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    docs: Vec<Value>,
    error: Option<String>,
    /// Refuse anchors as well as aliases.
    no_anchors: bool,
}

impl Builder {
    fn fail(&mut self, why: String, mark: Marker) {
        if self.error.is_none() {
            let path = self.path();
            self.error = Some(format!("line {}: {path}: {why}", mark.line()));
        }
    }

    /// Where the builder is, as a JSON path (`$.verifyImages[0].keys`).
    fn path(&self) -> String {
        let mut out = String::from("$");
        for open in &self.stack {
            match open {
                Open::Seq(items) => out.push_str(&format!("[{}]", items.len())),
                Open::Map(_, Some(k)) => {
                    out.push('.');
                    out.push_str(k);
                }
                Open::Map(_, None) => {}
            }
        }
        out
    }

    /// Puts a finished value where it belongs.
    fn put(&mut self, v: Value, mark: Marker) {
        match self.stack.last_mut() {
            None => {
                if !v.is_null() {
                    self.docs.push(v);
                }
            }
            Some(Open::Seq(items)) => items.push(v),
            Some(Open::Map(map, key)) => match key.take() {
                Some(k) => {
                    if map.contains_key(&k) {
                        self.fail(
                            format!("the key {k:?} is given twice (each key once)"),
                            mark,
                        );
                    } else {
                        map.insert(k, v);
                    }
                }
                None => match v {
                    Value::String(s) => *key = Some(s),
                    Value::Null => *key = Some(String::new()),
                    Value::Bool(_) | Value::Number(_) => *key = Some(v.to_string()),
                    _ => self.fail("a mapping key must be a scalar".into(), mark),
                },
            },
        }
    }

    fn open(&mut self, o: Open, mark: Marker) {
        if self.stack.len() >= DEPTH_MAX {
            self.fail(format!("nested deeper than {DEPTH_MAX}"), mark);
        } else {
            self.stack.push(o);
        }
    }

    fn close(&mut self, mark: Marker) {
        match self.stack.pop() {
            Some(Open::Seq(items)) => self.put(Value::Array(items), mark),
            Some(Open::Map(map, _)) => self.put(Value::Object(map), mark),
            None => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Alias(_) => self.fail("YAML aliases (*name) are not supported".into(), mark),
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _)
                if self.no_anchors && anchor > 0 =>
            {
                self.fail("YAML anchors (&name) are not supported".into(), mark)
            }
            Event::Scalar(text, style, _, _) => {
                let v = if style == TScalarStyle::Plain {
                    plain(text)
                } else {
                    Value::String(text)
                };
                self.put(v, mark);
            }
            Event::SequenceStart(..) => self.open(Open::Seq(Vec::new()), mark),
            Event::MappingStart(..) => self.open(Open::Map(Map::new(), None), mark),
            Event::SequenceEnd | Event::MappingEnd => self.close(mark),
            _ => {}
        }
    }
}

/// A plain scalar by the YAML 1.2 core schema.
fn plain(s: String) -> Value {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(&s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = s.parse::<i64>()
    {
        return Value::Number(n.into());
    }
    let numeric = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || b"._eE+-".contains(&b))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if numeric
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_manifests() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: x}\nspec:\n  containers:\n  - name: c\n    image: \"nginx:1.27\"\n    ports: [{containerPort: 80}]\n---\n# a comment\n---\nkind: List\nitems: []\nflag: true\nratio: 1.5\nempty:\nquoted: '007'\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["spec"]["containers"][0]["image"], "nginx:1.27");
        assert_eq!(
            docs[0]["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(docs[0]["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(docs[1]["flag"], true);
        assert_eq!(docs[1]["ratio"], 1.5);
        assert_eq!(docs[1]["empty"], Value::Null);
        assert_eq!(docs[1]["quoted"], "007");
    }

    #[test]
    fn hostile_yaml_is_refused() {
        let laughs = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        assert!(documents(laughs).unwrap_err().contains("aliases"));
        let deep = format!("{}x{}", "[".repeat(200), "]".repeat(200));
        assert!(documents(&deep).unwrap_err().contains("deeper than"));
        assert!(
            documents("a: 1\na: 2\n")
                .unwrap_err()
                .contains("given twice")
        );
        assert!(documents("key: [unclosed\n").is_err());
    }
}
