//! What the registry does by itself: lifecycle policies, expiring abandoned uploads, and
//! collecting blobs nothing references.

use crate::images::{self, decode, ImageRecord, Link};
use crate::lifecycle::{self, ImageInfo};
use crate::names::Digest;
use crate::{now_epoch, Error, Registry};
use berth_store::Txn;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub uploads: usize,
    pub links: usize,
    pub blobs: usize,
}

impl Registry {
    /// Applies the repository's lifecycle policy now; returns the digests it expired.
    pub async fn enforce_lifecycle(&self, name: &str) -> Result<Vec<String>, Error> {
        let (rec, _) = self.repository(name).await?;
        let Some(text) = &rec.lifecycle_policy else {
            return Ok(Vec::new());
        };
        let policy = lifecycle::parse(text)?;
        let images: Vec<ImageInfo> = self
            .images(name)
            .await?
            .into_iter()
            .map(|(i, tags)| ImageInfo {
                digest: i.digest,
                tags,
                pushed_at: i.pushed_at,
            })
            .collect();
        let mut expired = Vec::new();
        for (digest, rule) in lifecycle::evaluate(&policy, &images, now_epoch()) {
            let d = Digest::parse(&digest)?;
            match self.delete_manifest(name, &d).await {
                Ok(_) => {
                    tracing::info!(repository = name, %digest, rule, "lifecycle policy expired an image");
                    expired.push(digest);
                }
                Err(Error::ManifestUnknown(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        let now = now_epoch();
        self.update_repository(name, move |r| {
            r.lifecycle_updated_at = Some(now);
            Ok(())
        })
        .await?;
        Ok(expired)
    }

    /// Expires uploads untouched past `upload_expiry`, drops repository links to blobs no
    /// manifest of that repository uses (once older than `gc_grace`), and deletes blob files
    /// no link holds (once older than `gc_grace`).
    pub async fn collect_garbage(&self) -> Result<Collected, Error> {
        let mut done = Collected::default();
        let now = SystemTime::now();
        let older = |t: SystemTime, d: Duration| now.duration_since(t).is_ok_and(|age| age >= d);
        for (id, modified) in self.blobs.uploads().await? {
            if older(modified, self.config.upload_expiry) {
                self.store
                    .txn(Txn::new().delete(images::upload_key(&id)))
                    .await?;
                let _ = self.blobs.upload_cancel(&id).await;
                done.uploads += 1;
            }
        }
        // Blobs each repository's manifests use.
        let mut used: HashSet<(String, String)> = HashSet::new();
        for kv in self.store.range(images::IMAGES, None, None).await? {
            let image: ImageRecord = decode(&kv)?;
            let repo = kv.key[images::IMAGES.len()..]
                .rsplit_once('@')
                .map(|(r, _)| r.to_string())
                .unwrap_or_default();
            for b in image.blobs {
                used.insert((repo.clone(), b));
            }
        }
        let grace = self.config.gc_grace.as_secs_f64();
        let mut linked: HashSet<String> = HashSet::new();
        for kv in self.store.range(images::LINKS, None, None).await? {
            let Some((repo, digest)) = kv.key[images::LINKS.len()..].rsplit_once('@') else {
                continue;
            };
            let link: Link = decode(&kv)?;
            let (repo, digest) = (repo.to_string(), digest.to_string());
            if used.contains(&(repo, digest.clone())) || now_epoch() - link.linked_at < grace {
                linked.insert(digest);
                continue;
            }
            let t = Txn::new()
                .unchanged(&kv.key, Some(&kv))
                .delete(kv.key.clone());
            if self.commit(t).await? {
                done.links += 1;
            } else {
                linked.insert(digest);
            }
        }
        for (digest, modified) in self.blobs.list().await? {
            // The age is checked again by the store, atomically with commits: a push that
            // reused this file since it was listed makes it young and keeps it.
            if !linked.contains(digest.as_str())
                && older(modified, self.config.gc_grace)
                && self.blobs.delete(&digest, self.config.gc_grace).await?
            {
                tracing::info!(%digest, "collected a blob nothing references");
                done.blobs += 1;
            }
        }
        Ok(done)
    }

    /// Wipes every repository, image, link, upload and blob (a dev-mode reset); returns how
    /// many records and blobs went.
    pub async fn reset(&self) -> Result<usize, Error> {
        let mut n = self.store.delete_prefix(images::ALL).await?;
        for (id, _) in self.blobs.uploads().await? {
            self.blobs.upload_cancel(&id).await?;
            n += 1;
        }
        for (digest, _) in self.blobs.list().await? {
            if self.blobs.delete(&digest, Duration::ZERO).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// One round of lifecycle policies and garbage collection (the leader's, every
    /// housekeeping interval).
    pub async fn housekeeping_pass(&self) {
        {
            match self.repositories(None, None).await {
                Ok(repos) => {
                    for r in repos.into_iter().filter(|r| r.lifecycle_policy.is_some()) {
                        if let Some(name) = r.repository.repository_name {
                            if let Err(e) = self.enforce_lifecycle(&name).await {
                                tracing::warn!(repository = name, error = %e, "lifecycle policy failed");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing repositories failed"),
            }
            if let Err(e) = self.collect_garbage().await {
                tracing::warn!(error = %e, "registry garbage collection failed");
            }
        }
    }
}
