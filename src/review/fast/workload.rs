//! Objects read by the fast reader: what the serde derives of
//! `review::workload` make of a body, or `GaveUp`. Field names, `null`
//! handling, duplicate fields and the container cap are theirs; the tests
//! and the fuzz corpus hold the two readings to the same result.

use super::json::{Read, Reader, Seen, optional, or_default};
use crate::review::workload::*;

impl Object {
    /// Read, then moved to the heap once: a review carries one or two
    /// objects (512 bytes each), and the review is handed on by value a
    /// few times between the reader and the judge; boxed, those moves copy
    /// a pointer.
    pub fn read_boxed(r: &mut Reader<'_>) -> Read<Box<Object>> {
        Object::read(r).map(Box::new)
    }

    pub fn read(r: &mut Reader<'_>) -> Read<Object> {
        let mut o = Object::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "apiVersion" => {
                    seen.first(0)?;
                    o.api_version = r.known_string(KNOWN_API_VERSIONS)?;
                }
                "kind" => {
                    seen.first(1)?;
                    o.kind = r.known_string(crate::kinds::KINDS)?;
                }
                "metadata" => {
                    seen.first(2)?;
                    o.metadata = or_default(r, Metadata::read)?;
                }
                "spec" => {
                    seen.first(3)?;
                    o.spec = optional(r, Spec::read)?;
                }
                "template" => {
                    seen.first(4)?;
                    o.template = optional(r, PodTemplate::read)?;
                }
                "ephemeralContainers" => {
                    seen.first(5)?;
                    o.ephemeral_containers = or_default(r, ContainerSpec::read_list)?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(o)
    }
}

impl<T> Capped<T> {
    pub fn read<'a>(r: &mut Reader<'a>, item: fn(&mut Reader<'a>) -> Read<T>) -> Read<Self> {
        let mut out = Capped::EMPTY;
        r.array(|r| {
            if out.items.len() < MAX_CONTAINERS {
                out.items.push(item(r)?);
            } else {
                r.skip()?;
            }
            out.total += 1;
            Ok(())
        })?;
        Ok(out)
    }
}

impl Metadata {
    fn read(r: &mut Reader<'_>) -> Read<Metadata> {
        let mut m = Metadata::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "name" => {
                    seen.first(0)?;
                    m.name = r.optional_string()?;
                }
                "namespace" => {
                    seen.first(1)?;
                    m.namespace = r.optional_string()?;
                }
                "annotations" => {
                    seen.first(2)?;
                    if !r.null()? {
                        r.object(|r, key| {
                            let value = r.string()?;
                            if read_annotation(key) {
                                m.annotations.insert(key.to_string(), value.into_owned());
                            }
                            Ok(())
                        })?;
                    }
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(m)
    }
}

impl Spec {
    fn read(r: &mut Reader<'_>) -> Read<Spec> {
        let mut s = Spec::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "containers" => {
                    seen.first(0)?;
                    s.containers = or_default(r, ContainerSpec::read_list)?;
                }
                "initContainers" => {
                    seen.first(1)?;
                    s.init_containers = or_default(r, ContainerSpec::read_list)?;
                }
                "ephemeralContainers" => {
                    seen.first(2)?;
                    s.ephemeral_containers = or_default(r, ContainerSpec::read_list)?;
                }
                "volumes" => {
                    seen.first(3)?;
                    s.volumes = or_default(r, |r| Capped::read(r, VolumeSpec::read))?;
                }
                "template" => {
                    seen.first(4)?;
                    s.template = optional(r, |r| PodTemplate::read(r).map(Box::new))?;
                }
                "jobTemplate" => {
                    seen.first(5)?;
                    s.job_template = optional(r, |r| JobTemplate::read(r).map(Box::new))?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(s)
    }
}

impl PodTemplate {
    fn read(r: &mut Reader<'_>) -> Read<PodTemplate> {
        let mut t = PodTemplate::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "metadata" => {
                    seen.first(0)?;
                    t.metadata = or_default(r, Metadata::read)?;
                }
                "spec" => {
                    seen.first(1)?;
                    t.spec = optional(r, Spec::read)?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(t)
    }
}

impl JobTemplate {
    fn read(r: &mut Reader<'_>) -> Read<JobTemplate> {
        let mut t = JobTemplate::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "spec" => {
                    seen.first(0)?;
                    t.spec = optional(r, Spec::read)?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(t)
    }
}

impl ContainerSpec {
    fn read(r: &mut Reader<'_>) -> Read<ContainerSpec> {
        let mut c = ContainerSpec::default();
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "name" => {
                    seen.first(0)?;
                    c.name = r.optional_string()?;
                }
                "image" => {
                    seen.first(1)?;
                    c.image = r.optional_string()?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(c)
    }

    fn read_list(r: &mut Reader<'_>) -> Read<Capped<ContainerSpec>> {
        Capped::read(r, ContainerSpec::read)
    }
}

impl VolumeSpec {
    fn read<'a>(r: &mut Reader<'a>) -> Read<VolumeSpec> {
        let mut v = VolumeSpec::default();
        // Borrowed until we know the volume has an image.
        let mut name: Option<std::borrow::Cow<'a, str>> = None;
        let mut seen = Seen::default();
        r.object(|r, key| {
            match key {
                "name" => {
                    seen.first(0)?;
                    name = optional(r, Reader::string)?;
                }
                "image" => {
                    seen.first(1)?;
                    v.image = optional(r, |r| {
                        let mut i = ImageSource::default();
                        let mut seen = Seen::default();
                        r.object(|r, key| {
                            if key == "reference" {
                                seen.first(0)?;
                                i.reference = r.optional_string()?;
                            } else {
                                r.skip()?;
                            }
                            Ok(())
                        })?;
                        Ok(i)
                    })?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        if v.image.is_some() {
            v.name = name.map(std::borrow::Cow::into_owned);
        }
        Ok(v)
    }
}
