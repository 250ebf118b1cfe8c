//! ECR's replication between the regions of this server: the registry's replication
//! configuration (PutReplicationConfiguration, DescribeRegistry), and after each push, a copy
//! of the image — its blobs, the manifests an index names, and the manifest under the pushed
//! tag — into the repository of the same name in every destination region its rules match
//! (created there if missing, by the destination's `REPLICATION` creation template if one
//! applies), reported by DescribeImageReplicationStatus. Replicated images
//! are not replicated further, as in ECR.
//!
//! Records: `ecr/replication` → the configuration; `ecr/replication-status/NAME@DIGEST` →
//! [`Statuses`], one per destination region.

use crate::images::{self, decode, encode, CAS_ATTEMPTS};
use crate::names::{Digest, Reference};
use crate::{Error, Registry};
use berth_api::ecr;
use berth_api::ErrorKind;
use berth_store::Txn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CONFIG_KEY: &str = "ecr/replication";
pub fn status_key(name: &str, digest: &str) -> String {
    format!("ecr/replication-status/{name}@{digest}")
}
pub fn statuses_of(name: &str) -> String {
    format!("ecr/replication-status/{name}@")
}

/// ECR's limits: rules per configuration, distinct destinations, filters per rule.
const MAX_RULES: usize = 10;
const MAX_DESTINATIONS: usize = 25;
const MAX_FILTERS: usize = 100;

/// How a registry reaches the registries of the server's other regions.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// Whether the server serves `region`.
    fn serves(&self, region: &str) -> bool;
    /// Runs a replication in the background, as a task the server waits for when it stops.
    fn spawn(&self, work: futures::future::BoxFuture<'static, ()>);
    /// The registry of `region`, started if it was not.
    async fn registry(&self, region: &str) -> Result<Registry, Error>;
}

/// Where one image stands in each destination region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Statuses {
    /// By region: `IN_PROGRESS`, `COMPLETE` or `FAILED`, and why it failed.
    pub regions: BTreeMap<String, (String, Option<String>)>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::ecr(ErrorKind::InvalidParameter, message)
}

impl Registry {
    /// The configuration as stored (no rules when none was put).
    pub async fn replication_configuration(&self) -> Result<ecr::ReplicationConfiguration, Error> {
        Ok(match self.store.get(CONFIG_KEY).await? {
            Some(kv) => decode(&kv)?,
            None => ecr::ReplicationConfiguration {
                rules: Some(Vec::new()),
            },
        })
    }

    /// Checks and stores the configuration; an empty rule list turns replication off.
    pub async fn put_replication_configuration(
        &self,
        config: ecr::ReplicationConfiguration,
    ) -> Result<ecr::ReplicationConfiguration, Error> {
        let rules = config.rules.clone().unwrap_or_default();
        if rules.len() > MAX_RULES {
            return Err(invalid(format!(
                "A replication configuration has at most {MAX_RULES} rules; this one has {}",
                rules.len()
            )));
        }
        let mut destinations = std::collections::BTreeSet::new();
        for (i, rule) in rules.iter().enumerate() {
            let list = rule.destinations.clone().unwrap_or_default();
            if list.is_empty() {
                return Err(invalid(format!(
                    "Replication rule {} has no destinations; each rule needs at least one",
                    i + 1
                )));
            }
            for d in &list {
                let region = d.region.as_deref().unwrap_or_default();
                let registry = d.registry_id.as_deref().unwrap_or_default();
                if registry != self.config.account_id {
                    return Err(invalid(format!(
                        "Invalid registryId '{registry}' in a replication destination: this server has one registry, '{}', so replication is to its other regions only",
                        self.config.account_id
                    )));
                }
                if region == self.config.region {
                    return Err(invalid(format!(
                        "A replication destination cannot be the source registry itself ('{region}', '{registry}')"
                    )));
                }
                let served = match &self.peers {
                    Some(p) => p.serves(region),
                    None => false,
                };
                if !served {
                    return Err(invalid(format!(
                        "Invalid destination region '{region}': this server does not serve it"
                    )));
                }
                destinations.insert(region.to_string());
            }
            let filters = rule.repository_filters.clone().unwrap_or_default();
            if filters.len() > MAX_FILTERS {
                return Err(invalid(format!(
                    "A replication rule has at most {MAX_FILTERS} repository filters; rule {} has {}",
                    i + 1,
                    filters.len()
                )));
            }
            for f in &filters {
                let kind = f.filter_type.as_deref().unwrap_or_default();
                berth_api::error::check_enum("filterType", kind, &["PREFIX_MATCH"])
                    .map_err(Error::Ecr)?;
                let value = f.filter.as_deref().unwrap_or_default();
                if value.len() < 2 || value.len() > 256 {
                    return Err(invalid(format!(
                        "Invalid repository filter '{value}': a filter is 2 to 256 characters"
                    )));
                }
            }
            if rule
                .delete_replication
                .as_ref()
                .and_then(|d| d.enabled)
                .unwrap_or(false)
            {
                return Err(invalid(
                    "deleteReplication is not supported by this registry: deletions are not replicated",
                ));
            }
        }
        if destinations.len() > MAX_DESTINATIONS {
            return Err(invalid(format!(
                "A replication configuration has at most {MAX_DESTINATIONS} distinct destinations; this one has {}",
                destinations.len()
            )));
        }
        let stored = ecr::ReplicationConfiguration { rules: Some(rules) };
        self.store
            .txn(Txn::new().put(CONFIG_KEY, encode(&stored)?))
            .await?;
        Ok(stored)
    }

    /// The destination regions whose rules take repository `name`.
    async fn destinations(&self, name: &str) -> Result<Vec<String>, Error> {
        let config = self.replication_configuration().await?;
        let mut out = Vec::new();
        for rule in config.rules.unwrap_or_default() {
            let filters = rule.repository_filters.unwrap_or_default();
            let matches = filters.is_empty()
                || filters
                    .iter()
                    .any(|f| name.starts_with(f.filter.as_deref().unwrap_or_default()));
            if !matches {
                continue;
            }
            for d in rule.destinations.unwrap_or_default() {
                if let Some(region) = d.region {
                    if !out.contains(&region) {
                        out.push(region);
                    }
                }
            }
        }
        Ok(out)
    }

    /// After a push (by a user, not by replication): marks the image IN_PROGRESS in every
    /// destination its rules match, and copies it there in the background. The push has
    /// committed: a failure here is logged and recorded, never the push's.
    pub async fn replicate_push(&self, name: &str, digest: &Digest, reference: &Reference) {
        if let Err(e) = self.start_replication(name, digest, reference).await {
            tracing::warn!(repository = name, %digest, error = %e, "replication could not start");
        }
    }

    async fn start_replication(
        &self,
        name: &str,
        digest: &Digest,
        reference: &Reference,
    ) -> Result<(), Error> {
        let regions = self.destinations(name).await?;
        if regions.is_empty() {
            return Ok(());
        }
        let Some(peers) = self.peers.clone() else {
            return Ok(());
        };
        for region in &regions {
            self.set_status(name, digest, region, "IN_PROGRESS", None)
                .await?;
        }
        let (me, name, digest, reference) = (
            self.clone(),
            name.to_string(),
            digest.clone(),
            reference.clone(),
        );
        let spawner = peers.clone();
        spawner.spawn(Box::pin(async move {
            for region in regions {
                let result = match peers.registry(&region).await {
                    Ok(dest) => me.copy_image(&dest, &name, &digest, &reference).await,
                    Err(e) => Err(e),
                };
                let (status, reason) = match &result {
                    Ok(()) => ("COMPLETE", None),
                    Err(e) => {
                        tracing::warn!(repository = name, %digest, region, error = %e, "replication failed");
                        ("FAILED", Some(e.to_string()))
                    }
                };
                if let Err(e) = me.set_status(&name, &digest, &region, status, reason).await {
                    tracing::warn!(repository = name, %digest, region, error = %e, "recording replication failed");
                }
            }
        }));
        Ok(())
    }

    async fn set_status(
        &self,
        name: &str,
        digest: &Digest,
        region: &str,
        status: &str,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let key = status_key(name, digest.as_str());
        for _ in 0..CAS_ATTEMPTS {
            let seen = self.store.get(&key).await?;
            let mut s: Statuses = match &seen {
                Some(kv) => decode(kv)?,
                None => Statuses::default(),
            };
            s.regions
                .insert(region.to_string(), (status.to_string(), reason.clone()));
            let txn = Txn::new()
                .unchanged(&key, seen.as_ref())
                .put(key.clone(), encode(&s)?);
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(Error::Internal(format!(
            "recording the replication of {name}@{digest} kept conflicting"
        )))
    }

    /// Copies one image into `dest`'s repository of the same name: blobs it lacks, the
    /// manifests an index names, then the manifest under `reference`.
    async fn copy_image(
        &self,
        dest: &Registry,
        name: &str,
        digest: &Digest,
        reference: &Reference,
    ) -> Result<(), Error> {
        match dest.repository(name).await {
            Ok(_) => {}
            Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryNotFound => {
                // The destination's own REPLICATION template, if one applies.
                let template = dest.template_for(name, "REPLICATION").await?;
                match dest.create_from_template(name, template.as_ref()).await {
                    Ok(_) => {}
                    Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryAlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let image = self
            .get_manifest(name, &Reference::Digest(digest.clone()))
            .await?;
        for child in &image.children {
            let child = Digest::parse(child)?;
            let record = self
                .get_manifest(name, &Reference::Digest(child.clone()))
                .await?;
            self.copy_blobs(dest, name, &record).await?;
            dest.put_manifest(
                name,
                &Reference::Digest(child),
                Some(&record.media_type),
                record.manifest.as_bytes(),
            )
            .await?;
        }
        self.copy_blobs(dest, name, &image).await?;
        // A later push may have moved the tag on meanwhile: the copy then lands by digest
        // only, and that push's own replication moves the destination's tag.
        let reference = match reference {
            Reference::Tag(t) if self.resolve_tag(name, t).await?.as_ref() != Some(digest) => {
                Reference::Digest(digest.clone())
            }
            r => r.clone(),
        };
        dest.put_manifest(
            name,
            &reference,
            Some(&image.media_type),
            image.manifest.as_bytes(),
        )
        .await?;
        Ok(())
    }

    async fn copy_blobs(
        &self,
        dest: &Registry,
        name: &str,
        image: &images::ImageRecord,
    ) -> Result<(), Error> {
        for blob in &image.blobs {
            let blob = Digest::parse(blob)?;
            if dest.link(name, &blob).await?.is_some() {
                continue;
            }
            let Some(size) = self.link(name, &blob).await? else {
                return Err(Error::BlobUnknown(format!(
                    "blob {blob} of {name} is gone from the source"
                )));
            };
            if dest.blobs.exists(&blob).await? {
                dest.put_link(name, &blob, size).await?;
                continue;
            }
            let id = dest.start_upload(name).await?;
            let copied = match self.blobs.read(&blob, 0, size).await {
                Ok(bytes) => dest.blobs.upload_append(&id, 0, bytes).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = copied {
                let _ = dest.cancel_upload(name, &id).await;
                return Err(e);
            }
            dest.commit_upload(name, &id, &blob).await?;
        }
        Ok(())
    }

    /// At start: copies a previous run of the server left IN_PROGRESS (it stopped before they
    /// finished) are FAILED, saying so; a new push replicates the image again.
    pub async fn fail_interrupted_replications(&self) -> Result<usize, Error> {
        let mut n = 0;
        for kv in self
            .store
            .range("ecr/replication-status/", None, None)
            .await?
        {
            let mut s: Statuses = decode(&kv)?;
            let mut changed = false;
            for (status, reason) in s.regions.values_mut() {
                if status == "IN_PROGRESS" {
                    *status = "FAILED".into();
                    *reason = Some("the server stopped before the copy finished".into());
                    changed = true;
                    n += 1;
                }
            }
            if changed {
                // A conflict is a new push's own status: it stands.
                self.commit(Txn::new().replace(&kv, encode(&s)?)).await?;
            }
        }
        Ok(n)
    }

    /// DescribeImageReplicationStatus: the image's status in each destination it was
    /// replicated to (none for an image no rule took).
    pub async fn replication_statuses(
        &self,
        name: &str,
        digest: &Digest,
    ) -> Result<Vec<ecr::ImageReplicationStatus>, Error> {
        let Some(kv) = self.store.get(&status_key(name, digest.as_str())).await? else {
            return Ok(Vec::new());
        };
        let s: Statuses = decode(&kv)?;
        Ok(s.regions
            .into_iter()
            .map(|(region, (status, reason))| ecr::ImageReplicationStatus {
                region: Some(region),
                registry_id: Some(self.config.account_id.clone()),
                status: Some(status),
                failure_code: reason,
            })
            .collect())
    }
}
