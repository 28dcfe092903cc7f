//! Where the pod spec of every kind lives, and the images in a pod spec.
//!
//! The structs hold only the fields we read; serde skips everything else
//! (managedFields, status, ...) without building it, which keeps decoding a
//! real 6 KB Pod cheap. One `Spec` struct covers a PodSpec, a workload spec
//! (`template`) and a CronJob spec (`jobTemplate`): their field names do not
//! clash. This module does not decide anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::policy::{Container, ContainerKind, ImageInput};

/// A Kubernetes object, reduced to what leads to pod specs.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Object {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub metadata: Metadata,
    pub spec: Option<Spec>,
    /// Only in a `PodTemplate`.
    pub template: Option<PodTemplate>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    #[serde(deserialize_with = "null_default")]
    pub containers: Vec<ContainerSpec>,
    #[serde(deserialize_with = "null_default")]
    pub init_containers: Vec<ContainerSpec>,
    #[serde(deserialize_with = "null_default")]
    pub ephemeral_containers: Vec<ContainerSpec>,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
    /// ReplicationController.
    pub template: Option<Box<PodTemplate>>,
    /// CronJob.
    pub job_template: Option<Box<JobTemplate>>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct PodTemplate {
    #[serde(deserialize_with = "null_default")]
    pub metadata: Metadata,
    pub spec: Option<Spec>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct JobTemplate {
    pub spec: Option<Spec>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct ContainerSpec {
    pub name: Option<String>,
    /// Optional in workload templates (other tooling may fill it in); the
    /// apiserver rejects pods without one.
    pub image: Option<String>,
}

/// `null` decodes as the default, as the apiserver treats it.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// How a kind holds its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPath {
    /// The object is the pod (`spec`).
    Pod,
    /// `spec.template`.
    Template,
    /// `template` (the PodTemplate kind).
    PodTemplate,
    /// `spec.jobTemplate.spec.template`.
    CronJob,
}

impl PodPath {
    /// The kinds (by API group and kind) that have pods. Groups matter: a
    /// custom resource called `Job` elsewhere has another schema.
    pub fn of(group: &str, kind: &str) -> Option<PodPath> {
        match (group, kind) {
            ("", "Pod") => Some(PodPath::Pod),
            ("", "PodTemplate") => Some(PodPath::PodTemplate),
            ("", "ReplicationController")
            | ("apps" | "extensions", "Deployment" | "ReplicaSet" | "DaemonSet")
            | ("apps", "StatefulSet")
            | ("batch", "Job") => Some(PodPath::Template),
            ("batch", "CronJob") => Some(PodPath::CronJob),
            _ => None,
        }
    }

    /// For documents without a group at hand (`check -f`): by kind alone.
    pub fn of_kind(kind: &str) -> Option<PodPath> {
        ["", "apps", "batch"]
            .iter()
            .find_map(|g| PodPath::of(g, kind))
    }

    /// The JSON pointer of the pod template (empty for a Pod itself).
    pub fn pointer(self) -> &'static str {
        match self {
            PodPath::Pod => "",
            PodPath::Template => "/spec/template",
            PodPath::PodTemplate => "/template",
            PodPath::CronJob => "/spec/jobTemplate/spec/template",
        }
    }
}

/// A pod's metadata and spec, wherever they sit in the object.
pub struct PodRef<'a> {
    pub metadata: &'a Metadata,
    pub spec: Option<&'a Spec>,
}

impl Object {
    /// The pod inside this object, if the template is there.
    pub fn pod(&self, path: PodPath) -> Option<PodRef<'_>> {
        match path {
            PodPath::Pod => Some(PodRef {
                metadata: &self.metadata,
                spec: self.spec.as_ref(),
            }),
            PodPath::Template => self
                .spec
                .as_ref()?
                .template
                .as_deref()
                .map(PodTemplate::as_pod),
            PodPath::PodTemplate => self.template.as_ref().map(PodTemplate::as_pod),
            PodPath::CronJob => self
                .spec
                .as_ref()?
                .job_template
                .as_ref()?
                .spec
                .as_ref()?
                .template
                .as_deref()
                .map(PodTemplate::as_pod),
        }
    }
}

impl PodTemplate {
    fn as_pod(&self) -> PodRef<'_> {
        PodRef {
            metadata: &self.metadata,
            spec: self.spec.as_ref(),
        }
    }
}

impl PodRef<'_> {
    /// Every image, in the order containers, initContainers,
    /// ephemeralContainers, with the container it belongs to.
    pub fn images(&self) -> Vec<ImageInput> {
        let Some(spec) = self.spec else {
            return Vec::new();
        };
        spec.lists()
            .into_iter()
            .flat_map(|(kind, list)| {
                list.iter().enumerate().filter_map(move |(i, c)| {
                    Some(ImageInput {
                        image: c.image.clone()?,
                        container: Some(Container {
                            kind,
                            name: c.name.clone().unwrap_or_else(|| format!("#{i}")),
                        }),
                    })
                })
            })
            .collect()
    }
}

impl Spec {
    /// The three container lists with their kind.
    pub fn lists(&self) -> [(ContainerKind, &[ContainerSpec]); 3] {
        [
            (ContainerKind::Container, &self.containers),
            (ContainerKind::Init, &self.init_containers),
            (ContainerKind::Ephemeral, &self.ephemeral_containers),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn images(kind: &str, obj: serde_json::Value) -> Vec<String> {
        let o: Object = serde_json::from_value(obj).unwrap();
        let pod = o.pod(PodPath::of_kind(kind).unwrap()).unwrap();
        assert_eq!(
            pod.metadata.annotations.get("a").map(String::as_str),
            Some("b"),
            "{kind}"
        );
        pod.images().into_iter().map(|i| i.image).collect()
    }

    #[test]
    fn every_kind_with_a_pod_template() {
        let t = json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
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
            assert_eq!(images(kind, obj), ["x:1"], "{kind}");
        }
        assert_eq!(PodPath::of_kind("Service"), None);
        assert_eq!(PodPath::of("example.com", "Job"), None);
        let empty: Object = serde_json::from_value(json!({"spec": {}})).unwrap();
        assert!(empty.pod(PodPath::Template).is_none());
    }

    #[test]
    fn all_three_lists_in_order_with_names() {
        let pod: Object = serde_json::from_value(json!({"spec": {
            "ephemeralContainers": [{"name": "dbg", "image": "busybox:1"}],
            "initContainers": [{"name": "init", "image": "alpine:3"}],
            "containers": [{"name": "app", "image": "app:1"}, {"image": "side:2"}, {"name": "noimage"}]
        }}))
        .unwrap();
        let got = pod.pod(PodPath::Pod).unwrap().images();
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
    fn nulls_are_empty_and_wrong_types_fail() {
        let o: Object =
            serde_json::from_value(json!({"metadata": null, "spec": {"containers": null}}))
                .unwrap();
        assert!(o.pod(PodPath::Pod).unwrap().images().is_empty());
        for bad in [
            json!({"spec": {"containers": {}}}),
            json!({"spec": {"containers": [7]}}),
            json!({"spec": {"initContainers": [{"image": 5}]}}),
            json!({"metadata": {"annotations": {"a": 1}}}),
        ] {
            assert!(
                serde_json::from_value::<Object>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
