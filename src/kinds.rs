//! Which Kubernetes kinds hold pods, and where in the object the pod (or
//! its template) sits. Shared by the wire adapters (`review/workload.rs`,
//! which decode it) and the mutations (`mutate.rs`, which patch it); it
//! reads nothing itself.

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
    /// `ephemeralContainers` of the `EphemeralContainers` kind, which the
    /// `pods/ephemeralcontainers` subresource used before Kubernetes 1.22.
    EphemeralContainers,
}

/// The API groups of the kinds that have pods ([`PodPath::of`]), as
/// `check -f` tries them; the review readers keep these without a copy.
pub const GROUPS: &[&str] = &["", "apps", "batch"];

/// The kinds that have pods ([`PodPath::of`]), in any group.
pub const KINDS: &[&str] = &[
    "Pod",
    "PodTemplate",
    "EphemeralContainers",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
];

impl PodPath {
    /// The kinds (by API group and kind) that have pods. Groups matter: a
    /// custom resource called `Job` elsewhere has another schema.
    pub fn of(group: &str, kind: &str) -> Option<PodPath> {
        match (group, kind) {
            ("", "Pod") => Some(PodPath::Pod),
            ("", "PodTemplate") => Some(PodPath::PodTemplate),
            ("", "EphemeralContainers") => Some(PodPath::EphemeralContainers),
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
        GROUPS.iter().find_map(|g| PodPath::of(g, kind))
    }

    /// The JSON pointer of the pod template (empty for a Pod itself).
    pub fn pointer(self) -> &'static str {
        match self {
            PodPath::Pod | PodPath::EphemeralContainers => "",
            PodPath::Template => "/spec/template",
            PodPath::PodTemplate => "/template",
            PodPath::CronJob => "/spec/jobTemplate/spec/template",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list of kinds is the kinds `of` knows: each has a pod in one
    /// of the groups, and a kind without one is not on it.
    #[test]
    fn the_kind_list_is_the_kinds_with_pods() {
        for kind in KINDS {
            assert!(PodPath::of_kind(kind).is_some(), "{kind}");
        }
        for other in ["Service", "ConfigMap", "pod", ""] {
            assert!(PodPath::of_kind(other).is_none() && !KINDS.contains(&other));
        }
    }
}
