//! Where the pod spec of every kind lives, and the images in a pod spec.
//!
//! The structs hold only the fields we read; serde skips everything else
//! (managedFields, status, ...) without building it, which keeps decoding a
//! real 6 KB Pod cheap. One `Spec` struct covers a PodSpec, a workload spec
//! (`template`) and a CronJob spec (`jobTemplate`): their field names do not
//! clash. Container lists are read up to [`MAX_CONTAINERS`] and counted
//! beyond it, so a body of 500,000 containers costs what 1,024 do. This
//! module does not decide anything.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

pub use crate::kinds::PodPath;
use crate::policy::{Container, ContainerKind, ImageInput};

/// A Kubernetes object, reduced to what leads to pod specs.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Object {
    pub api_version: Option<Cow<'static, str>>,
    pub kind: Option<Cow<'static, str>>,
    #[serde(deserialize_with = "null_default")]
    pub metadata: Metadata,
    pub spec: Option<Spec>,
    /// Only in a `PodTemplate`.
    pub template: Option<PodTemplate>,
    /// Only in an `EphemeralContainers` object (the `pods/ephemeralcontainers`
    /// subresource before Kubernetes 1.22).
    #[serde(deserialize_with = "null_default")]
    pub ephemeral_containers: Capped<ContainerSpec>,
}

/// The `apiVersion`s of objects with pods: read without a copy, as are
/// their kinds ([`crate::kinds::KINDS`]).
pub(crate) const KNOWN_API_VERSIONS: &[&str] = &["v1", "apps/v1", "batch/v1"];

/// Containers (all lists of one pod together) beyond which a request is
/// not judged but refused: real pods have a handful, and each one kept
/// costs memory and judging time an attacker would choose.
pub const MAX_CONTAINERS: usize = 1024;

/// A list kept up to [`MAX_CONTAINERS`] items; the rest are only counted
/// (checked to be JSON, not decoded).
#[derive(Debug, Clone)]
pub struct Capped<T> {
    pub(crate) items: Vec<T>,
    pub(crate) total: usize,
}

impl<T> Capped<T> {
    pub(crate) const EMPTY: Capped<T> = Capped {
        items: Vec::new(),
        total: 0,
    };

    /// The items kept.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// How many the list had, kept or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The items kept, taken.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Capped::EMPTY
    }
}

impl<T> From<Vec<T>> for Capped<T> {
    fn from(items: Vec<T>) -> Self {
        Capped {
            total: items.len(),
            items,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Capped<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
            type Value = Capped<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Capped<T>, A::Error> {
                let mut out = Capped::EMPTY;
                while out.items.len() < MAX_CONTAINERS {
                    match seq.next_element()? {
                        Some(item) => out.items.push(item),
                        None => break,
                    }
                }
                out.total = out.items.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.total += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq(PhantomData))
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Only the annotations anything here reads (see [`read_annotation`]):
    /// the rest (kubectl's last-applied configuration, ...) are skipped
    /// unbuilt.
    #[serde(deserialize_with = "kept_annotations")]
    pub annotations: BTreeMap<String, String>,
}

/// Whether an annotation is read at all: break-glass requests and the
/// opt-out of mutation.
pub fn read_annotation(key: &str) -> bool {
    crate::policy::is_break_glass_key(key) || key == crate::mutate::SKIP_ANNOTATION
}

/// A map of annotations (or `null`), keeping those [`read_annotation`]
/// names; values of others are checked to be strings and dropped.
fn kept_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Kept;
    impl<'de> Visitor<'de> for Kept {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                if read_annotation(&key) {
                    let value: String = map.next_value()?;
                    kept.insert(key.into_owned(), value);
                } else {
                    // Still a string, as the apiserver would have it.
                    map.next_value::<Text<'de>>()?;
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_option(Kept)
}

/// A string, borrowed from the body unless it holds escapes.
struct Text<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    #[serde(deserialize_with = "null_default")]
    pub containers: Capped<ContainerSpec>,
    #[serde(deserialize_with = "null_default")]
    pub init_containers: Capped<ContainerSpec>,
    #[serde(deserialize_with = "null_default")]
    pub ephemeral_containers: Capped<ContainerSpec>,
    /// Only those with an `image` source matter.
    #[serde(deserialize_with = "null_default")]
    pub volumes: Capped<VolumeSpec>,
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

/// A volume, reduced to its image (`image.reference`, Kubernetes 1.31)
/// and, for a volume with one, its name: other volumes' names are not
/// kept (a pod has several, and only image volumes are judged).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(from = "VolumeFields")]
pub struct VolumeSpec {
    pub name: Option<String>,
    pub image: Option<ImageSource>,
}

/// A volume as serde reads it, before [`VolumeSpec`] drops the name of a
/// volume without an image.
#[derive(Deserialize, Default)]
#[serde(default)]
struct VolumeFields {
    name: Option<String>,
    image: Option<ImageSource>,
}

impl From<VolumeFields> for VolumeSpec {
    fn from(v: VolumeFields) -> Self {
        VolumeSpec {
            name: v.name.filter(|_| v.image.is_some()),
            image: v.image,
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct ImageSource {
    pub reference: Option<String>,
}

/// `null` decodes as the default, as the apiserver treats it.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The list of a pod that has none.
static NO_CONTAINERS: Capped<ContainerSpec> = Capped {
    items: Vec::new(),
    total: 0,
};
static NO_VOLUMES: Capped<VolumeSpec> = Capped {
    items: Vec::new(),
    total: 0,
};

/// A pod's metadata and container lists, wherever they sit in the object.
pub struct PodRef<'a> {
    pub metadata: &'a Metadata,
    lists: [(ContainerKind, &'a Capped<ContainerSpec>); 3],
    volumes: &'a Capped<VolumeSpec>,
    /// A workload's template, not a pod: the apiserver lets an image be
    /// blank there (other tooling fills it in).
    template: bool,
}

/// Why a pod's images were not read.
pub fn too_many_containers(n: usize) -> String {
    format!(
        "the pod has {n} containers, more than the {MAX_CONTAINERS} this webhook judges in one request"
    )
}

impl Object {
    /// The pod inside this object, if the template is there.
    pub fn pod(&self, path: PodPath) -> Option<PodRef<'_>> {
        match path {
            PodPath::Pod => Some(PodRef::of(&self.metadata, self.spec.as_ref(), false)),
            PodPath::EphemeralContainers => Some(PodRef {
                metadata: &self.metadata,
                lists: [
                    (ContainerKind::Container, &NO_CONTAINERS),
                    (ContainerKind::Init, &NO_CONTAINERS),
                    (ContainerKind::Ephemeral, &self.ephemeral_containers),
                ],
                volumes: &NO_VOLUMES,
                template: false,
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
        PodRef::of(&self.metadata, self.spec.as_ref(), true)
    }
}

impl<'a> PodRef<'a> {
    fn of(metadata: &'a Metadata, spec: Option<&'a Spec>, template: bool) -> Self {
        let list = |f: fn(&Spec) -> &Capped<ContainerSpec>| spec.map_or(&NO_CONTAINERS, f);
        PodRef {
            metadata,
            lists: [
                (ContainerKind::Container, list(|s| &s.containers)),
                (ContainerKind::Init, list(|s| &s.init_containers)),
                (ContainerKind::Ephemeral, list(|s| &s.ephemeral_containers)),
            ],
            volumes: spec.map_or(&NO_VOLUMES, |s| &s.volumes),
            template,
        }
    }

    /// Containers in all lists and volumes, read or not.
    pub fn container_count(&self) -> usize {
        self.lists.iter().map(|(_, l)| l.total()).sum::<usize>() + self.volumes.total()
    }

    /// Every image, in the order containers, initContainers,
    /// ephemeralContainers, with the container it belongs to; an error
    /// when there are more than [`MAX_CONTAINERS`]. A blank image in a
    /// template is left out: the apiserver accepts it there, and no pod can
    /// be created with it.
    pub fn images(&self) -> Result<Vec<ImageInput>, String> {
        let count = self.container_count();
        if count > MAX_CONTAINERS {
            return Err(too_many_containers(count));
        }
        let template = self.template;
        // Image volumes are pulled like containers' images: judged alike.
        let volumes = self
            .volumes
            .items()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let image = v.image.as_ref()?.reference.as_deref()?;
                if template && image.trim().is_empty() {
                    return None;
                }
                Some(ImageInput {
                    image: image.to_string(),
                    container: Some(Container {
                        kind: ContainerKind::ImageVolume,
                        name: v.name.clone().unwrap_or_else(|| format!("#{i}")),
                    }),
                })
            });
        Ok(self
            .lists
            .iter()
            .flat_map(|&(kind, list)| {
                list.items().iter().enumerate().filter_map(move |(i, c)| {
                    let image = c.image.as_deref()?;
                    if template && image.trim().is_empty() {
                        return None;
                    }
                    Some(ImageInput {
                        image: image.to_string(),
                        container: Some(Container {
                            kind,
                            name: c.name.clone().unwrap_or_else(|| format!("#{i}")),
                        }),
                    })
                })
            })
            .chain(volumes)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_annotations_that_are_read_are_kept() {
        let body = r#"{"metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
            "ops.image-policy.k8s.io/INC-1": "break-glass",
            "image-policy.k8s.io/no-prefix": "break-glass",
            "image-bouncer.io/skip-mutation": "true",
            "ops.image-policy.k8s.io/esc\u0061ped": "break-glass"}}}"#;
        let o: Object = serde_json::from_str(body).unwrap();
        let kept: Vec<&str> = o.metadata.annotations.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "image-bouncer.io/skip-mutation",
                "ops.image-policy.k8s.io/INC-1",
                "ops.image-policy.k8s.io/escaped"
            ]
        );
        for none in [
            r#"{"metadata": {"annotations": null}}"#,
            r#"{"metadata": {}}"#,
        ] {
            let o: Object = serde_json::from_str(none).unwrap();
            assert!(o.metadata.annotations.is_empty());
        }
        // A kept annotation must still be a string; a list is not a map.
        for bad in [
            r#"{"metadata": {"annotations": {"ops.image-policy.k8s.io/x": 1}}}"#,
            r#"{"metadata": {"annotations": ["ops.image-policy.k8s.io/x"]}}"#,
        ] {
            assert!(serde_json::from_str::<Object>(bad).is_err(), "{bad}");
        }
    }

    fn images(kind: &str, obj: serde_json::Value) -> Vec<String> {
        let o: Object = serde_json::from_value(obj).unwrap();
        let pod = o.pod(PodPath::of_kind(kind).unwrap()).unwrap();
        assert_eq!(
            pod.metadata
                .annotations
                .get("x.image-policy.k8s.io/a")
                .map(String::as_str),
            Some("b"),
            "{kind}"
        );
        pod.images().unwrap().into_iter().map(|i| i.image).collect()
    }

    #[test]
    fn every_kind_with_a_pod_template() {
        let t = json!({"metadata": {"annotations": {"x.image-policy.k8s.io/a": "b", "other": "c"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
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
        let got = pod.pod(PodPath::Pod).unwrap().images().unwrap();
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
    fn containers_beyond_the_cap_are_counted_not_kept() {
        let many = |n: usize| {
            let list: Vec<_> = (0..n)
                .map(|i| json!({"name": format!("c{i}"), "image": "a"}))
                .collect();
            serde_json::from_value::<Object>(
                json!({"spec": {"containers": list, "initContainers": [{"image": "b"}]}}),
            )
            .unwrap()
        };
        let at_cap = many(MAX_CONTAINERS - 1);
        assert_eq!(
            at_cap.pod(PodPath::Pod).unwrap().images().unwrap().len(),
            MAX_CONTAINERS
        );
        let over = many(5000);
        assert_eq!(
            over.spec.as_ref().unwrap().containers.items().len(),
            MAX_CONTAINERS
        );
        let pod = over.pod(PodPath::Pod).unwrap();
        assert_eq!(pod.container_count(), 5001);
        assert!(
            pod.images()
                .unwrap_err()
                .contains("5001 containers, more than the 1024")
        );
    }

    #[test]
    fn blank_images_are_left_out_of_templates_only() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": " "}, {"name": "b", "image": ""}, {"name": "c", "image": "x:1"}]}});
        let deploy: Object = serde_json::from_value(json!({"spec": {"template": t}})).unwrap();
        let got = deploy.pod(PodPath::Template).unwrap().images().unwrap();
        assert_eq!(
            got.iter().map(|i| i.image.as_str()).collect::<Vec<_>>(),
            ["x:1"]
        );
        let pod: Object = serde_json::from_value(t).unwrap();
        let got = pod.pod(PodPath::Pod).unwrap().images().unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn image_volumes_are_images_in_pods_and_templates() {
        let spec = json!({"containers": [{"name": "c", "image": "nginx:1.27"}],
            "volumes": [{"name": "cfg", "configMap": {"name": "x"}}, {"name": "models", "image": {"reference": "quay.io/evil/models:1"}}]});
        let pod: Object = serde_json::from_value(json!({"spec": spec})).unwrap();
        let deploy: Object =
            serde_json::from_value(json!({"spec": {"template": {"spec": spec}}})).unwrap();
        for (o, path) in [(&pod, PodPath::Pod), (&deploy, PodPath::Template)] {
            let got = o.pod(path).unwrap().images().unwrap();
            let last = got.last().unwrap();
            assert_eq!(last.image, "quay.io/evil/models:1");
            assert_eq!(
                last.container.as_ref().unwrap().to_string(),
                "image volume \"models\""
            );
            assert_eq!(got.len(), 2);
        }
    }

    /// Only image volumes keep their names, in both readings; an image
    /// volume is named whichever field comes first.
    #[test]
    fn only_image_volumes_keep_their_names() {
        let body = r#"{"spec":{"volumes":[{"name":"cfg","configMap":{"name":"x"}},{"image":{"reference":"m:1"},"name":"models"},{"name":"empty","image":null},{"name":"blank","image":{}}]}}"#;
        let slow: Object = serde_json::from_str(body).unwrap();
        let mut r = crate::review::fast::json::Reader::new(body);
        let fast = Object::read(&mut r).unwrap();
        r.end().unwrap();
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        let names: Vec<Option<&str>> = fast
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .items()
            .iter()
            .map(|v| v.name.as_deref())
            .collect();
        assert_eq!(names, [None, Some("models"), None, Some("blank")]);
        let got = fast.pod(PodPath::Pod).unwrap().images().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].container.as_ref().unwrap().to_string(),
            "image volume \"models\""
        );
    }

    #[test]
    fn legacy_ephemeral_containers_kind() {
        assert_eq!(
            PodPath::of("", "EphemeralContainers"),
            Some(PodPath::EphemeralContainers)
        );
        let o: Object = serde_json::from_value(
            json!({"kind": "EphemeralContainers", "metadata": {"name": "p"},
            "ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}),
        )
        .unwrap();
        let got = o
            .pod(PodPath::EphemeralContainers)
            .unwrap()
            .images()
            .unwrap();
        assert_eq!(got[0].image, "busybox");
        assert_eq!(
            got[0].container.as_ref().unwrap().to_string(),
            "ephemeral container \"debugger\""
        );
    }

    #[test]
    fn nulls_are_empty_and_wrong_types_fail() {
        let o: Object =
            serde_json::from_value(json!({"metadata": null, "spec": {"containers": null}}))
                .unwrap();
        assert!(o.pod(PodPath::Pod).unwrap().images().unwrap().is_empty());
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
