//! Manifests: which kind a document is and what it references. Pure.

use crate::names::Digest;
use crate::Error;
use serde::Deserialize;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The media types Berth stores.
pub const SUPPORTED: &[&str] = &[DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX];
/// Largest manifest accepted, as the reference registry does.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a manifest is and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    /// Blobs it needs: the config and the layers (not the foreign ones, which live elsewhere).
    pub blobs: Vec<(Digest, u64)>,
    /// Manifests it lists (an index or manifest list).
    pub children: Vec<(Digest, u64)>,
    pub subject: Option<Digest>,
    /// For the referrers API: the manifest's artifactType, else its config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == DOCKER_LIST || self.media_type == OCI_INDEX
    }
}

fn descriptor(d: &Descriptor, what: &str) -> Result<(Digest, u64), Error> {
    let digest =
        Digest::parse(&d.digest).map_err(|e| Error::ManifestInvalid(format!("{what}: {e}")))?;
    if d.size < 0 {
        return Err(Error::ManifestInvalid(format!(
            "{what}: size {} is negative",
            d.size
        )));
    }
    Ok((digest, d.size as u64))
}

/// Parses and checks a manifest. `content_type` is the request's Content-Type, if any.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, Error> {
    if bytes.len() > MAX_MANIFEST {
        return Err(Error::SizeInvalid(format!(
            "the manifest is {} bytes; the limit is {MAX_MANIFEST}",
            bytes.len()
        )));
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| Error::ManifestInvalid(format!("the manifest is not valid JSON: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(Error::ManifestInvalid(format!(
            "schemaVersion must be 2, not {}",
            raw.schema_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "missing".into())
        )));
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (content_type, raw.media_type.as_deref()) {
        (Some(c), Some(m)) if c != m => {
            return Err(Error::ManifestInvalid(format!(
                "the Content-Type '{c}' does not match the manifest's mediaType '{m}'"
            )))
        }
        (Some(c), _) => c.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if !SUPPORTED.contains(&media_type.as_str()) {
        return Err(Error::ManifestInvalid(format!(
            "media type '{media_type}' is not supported; use one of {}",
            SUPPORTED.join(", ")
        )));
    }
    let mut parsed = Parsed {
        media_type: media_type.clone(),
        blobs: Vec::new(),
        children: Vec::new(),
        subject: match &raw.subject {
            Some(s) => Some(descriptor(s, "subject")?.0),
            None => None,
        },
        artifact_type: raw.artifact_type.clone(),
        annotations: raw.annotations.clone(),
    };
    if media_type == DOCKER_LIST || media_type == OCI_INDEX {
        let Some(list) = &raw.manifests else {
            return Err(Error::ManifestInvalid(
                "an index must have a 'manifests' list".into(),
            ));
        };
        for (i, d) in list.iter().enumerate() {
            parsed
                .children
                .push(descriptor(d, &format!("manifests[{i}]"))?);
        }
    } else {
        let Some(config) = &raw.config else {
            return Err(Error::ManifestInvalid(
                "an image manifest must have a 'config'".into(),
            ));
        };
        parsed.blobs.push(descriptor(config, "config")?);
        if parsed.artifact_type.is_none() {
            parsed.artifact_type = config.media_type.clone();
        }
        let Some(layers) = &raw.layers else {
            return Err(Error::ManifestInvalid(
                "an image manifest must have a 'layers' list".into(),
            ));
        };
        for (i, d) in layers.iter().enumerate() {
            let foreign = d
                .media_type
                .as_deref()
                .is_some_and(|m| m.contains("foreign"))
                || d.urls.as_ref().is_some_and(|u| !u.is_empty());
            let r = descriptor(d, &format!("layers[{i}]"))?;
            if !foreign {
                parsed.blobs.push(r);
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifests_list_their_blobs() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":10}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":20}}]}}"#
        );
        let p = parse(m.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(p.media_type, DOCKER_MANIFEST);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.blobs[1], (Digest::parse(D2).unwrap(), 20));
        assert!(!p.is_index());
        // Content-Type absent: the document's own mediaType decides.
        assert_eq!(
            parse(m.as_bytes(), None).unwrap().media_type,
            DOCKER_MANIFEST
        );
        // Disagreeing: refused.
        assert!(matches!(
            parse(m.as_bytes(), Some(OCI_MANIFEST)),
            Err(Error::ManifestInvalid(_))
        ));
    }

    #[test]
    fn indexes_and_referrers() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":7}}}}"#
        );
        let p = parse(m.as_bytes(), None).unwrap();
        assert!(p.is_index());
        assert_eq!(p.children.len(), 1);
        assert_eq!(p.subject, Some(Digest::parse(D2).unwrap()));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        for (doc, want) in [
            ("{not json", "not valid JSON"),
            (r#"{"schemaVersion":1}"#, "schemaVersion must be 2"),
            (
                r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
                "not supported",
            ),
            (r#"{"schemaVersion":2,"layers":[]}"#, "must have a 'config'"),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:xyz","size":1},"layers":[]}"#,
                "config:",
            ),
        ] {
            let e = parse(doc.as_bytes(), None).unwrap_err();
            assert!(e.to_string().contains(want), "{doc}: {e}");
        }
    }
}
