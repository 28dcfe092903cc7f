//! Where the pod spec of every kind lives, and the images in a pod spec.
//!
//! Works on `serde_json::Value` so that unknown fields of real objects
//! (managedFields, status, ...) cost nothing and never fail a decode. Wrong
//! types in the fields we read are errors with a path; missing lists are
//! empty. This module does not decide anything.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::type_name;
use crate::policy::{Container, ContainerKind, ImageInput};

/// The three container lists of a pod spec, with their kind.
pub const CONTAINER_LISTS: [(&str, ContainerKind); 3] = [
    ("containers", ContainerKind::Container),
    ("initContainers", ContainerKind::Init),
    ("ephemeralContainers", ContainerKind::Ephemeral),
];

/// The path from an object of `kind` to its pod template (the object whose
/// `metadata` and `spec` are the pod's), or `None` for kinds without pods.
/// The empty path means the object is the pod itself.
pub fn pod_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "PodTemplate" => &["template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// The pod (or pod template) inside an object of `kind`, with the dotted
/// path to it for messages. `Ok(None)` when the kind has no pods or the
/// template is absent.
pub fn pod_of<'a>(kind: &str, object: &'a Value) -> Result<Option<&'a Value>, String> {
    let Some(path) = pod_path(kind) else {
        return Ok(None);
    };
    let mut cur = object;
    let mut walked = Vec::new();
    for key in path {
        walked.push(*key);
        match cur.get(key) {
            Some(Value::Object(_)) => cur = &cur[key],
            None | Some(Value::Null) => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "{}: expected an object, found {}",
                    walked.join("."),
                    type_name(other)
                ));
            }
        }
    }
    Ok(Some(cur))
}

/// Every image of a pod (its `spec` lists), in the order containers,
/// initContainers, ephemeralContainers.
pub fn pod_images(pod: &Value) -> Result<Vec<ImageInput>, String> {
    let spec = match pod.get("spec") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(s @ Value::Object(_)) => s,
        Some(other) => {
            return Err(format!(
                "spec: expected an object, found {}",
                type_name(other)
            ));
        }
    };
    let mut out = Vec::new();
    for (list, kind) in CONTAINER_LISTS {
        out.extend(container_images(spec, list, kind)?);
    }
    Ok(out)
}

/// The images of one container list of a pod spec.
pub fn container_images(
    spec: &Value,
    list: &str,
    kind: ContainerKind,
) -> Result<Vec<ImageInput>, String> {
    let items = match spec.get(list) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "spec.{list}: expected an array, found {}",
                type_name(other)
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, c) in items.iter().enumerate() {
        let at = || format!("spec.{list}[{i}]");
        if !c.is_object() {
            return Err(format!(
                "{}: expected an object, found {}",
                at(),
                type_name(c)
            ));
        }
        let name = match c.get("name") {
            Some(Value::String(n)) => n.clone(),
            None | Some(Value::Null) => format!("#{i}"),
            Some(other) => {
                return Err(format!(
                    "{}.name: expected a string, found {}",
                    at(),
                    type_name(other)
                ));
            }
        };
        match c.get("image") {
            Some(Value::String(image)) => out.push(ImageInput {
                image: image.clone(),
                container: Some(Container { kind, name }),
            }),
            // Workload templates may leave the image to other tooling; the
            // apiserver rejects pods without one.
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(format!(
                    "{}.image: expected a string, found {}",
                    at(),
                    type_name(other)
                ));
            }
        }
    }
    Ok(out)
}

/// `metadata.annotations` of an object (or pod template) as strings; values
/// of other types are ignored, as the apiserver would have rejected them.
pub fn annotations(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.<field>` as a string, if present.
pub fn metadata_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn images(kind: &str, obj: &Value) -> Vec<String> {
        let pod = pod_of(kind, obj).unwrap().unwrap();
        pod_images(pod)
            .unwrap()
            .into_iter()
            .map(|i| i.image)
            .collect()
    }

    fn spec(images: &[&str]) -> Value {
        json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": images.iter().map(|i| json!({"name": "c", "image": i})).collect::<Vec<_>>()}})
    }

    #[test]
    fn every_kind_with_a_pod_template() {
        let t = spec(&["x:1"]);
        let cases = [
            ("Deployment", json!({"spec": {"template": t}})),
            ("ReplicaSet", json!({"spec": {"template": t}})),
            ("StatefulSet", json!({"spec": {"template": t}})),
            ("DaemonSet", json!({"spec": {"template": t}})),
            ("Job", json!({"spec": {"template": t}})),
            ("ReplicationController", json!({"spec": {"template": t}})),
            ("PodTemplate", json!({"template": t})),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": t}}}}),
            ),
            ("Pod", t.clone()),
        ];
        for (kind, obj) in cases {
            assert_eq!(images(kind, &obj), ["x:1"], "{kind}");
            let pod = pod_of(kind, &obj).unwrap().unwrap();
            assert_eq!(
                annotations(pod).get("a").map(String::as_str),
                Some("b"),
                "{kind}"
            );
        }
        assert_eq!(pod_of("Service", &json!({"spec": {}})).unwrap(), None);
        assert_eq!(pod_of("Deployment", &json!({"spec": {}})).unwrap(), None);
    }

    #[test]
    fn all_three_lists_in_order_with_names() {
        let pod = json!({"spec": {
            "ephemeralContainers": [{"name": "dbg", "image": "busybox:1"}],
            "initContainers": [{"name": "init", "image": "alpine:3"}],
            "containers": [{"name": "app", "image": "app:1"}, {"image": "side:2"}, {"name": "noimage"}]
        }});
        let got = pod_images(&pod).unwrap();
        let pairs: Vec<(String, String)> = got
            .iter()
            .map(|i| (i.container.as_ref().unwrap().to_string(), i.image.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("container \"app\"".to_string(), "app:1".to_string()),
                ("container \"#1\"".to_string(), "side:2".to_string()),
                (
                    "init container \"init\"".to_string(),
                    "alpine:3".to_string()
                ),
                (
                    "ephemeral container \"dbg\"".to_string(),
                    "busybox:1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (
                json!({"spec": []}),
                "spec: expected an object, found an array",
            ),
            (
                json!({"spec": {"containers": {}}}),
                "spec.containers: expected an array, found an object",
            ),
            (
                json!({"spec": {"containers": [7]}}),
                "spec.containers[0]: expected an object, found a number",
            ),
            (
                json!({"spec": {"initContainers": [{"image": 5}]}}),
                "spec.initContainers[0].image: expected a string, found a number",
            ),
            (
                json!({"spec": {"containers": [{"name": 1, "image": "x"}]}}),
                "spec.containers[0].name: expected a string, found a number",
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(pod_images(&pod).unwrap_err(), want);
        }
        assert_eq!(
            pod_of("CronJob", &json!({"spec": {"jobTemplate": "x"}})).unwrap_err(),
            "spec.jobTemplate: expected an object, found a string"
        );
    }
}
