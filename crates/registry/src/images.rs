//! Repositories, images, tags, blob links and uploads: the one implementation both the
//! distribution protocol and ECR's API call.
//!
//! Where things live in the store (`:` and `@` cannot occur in repository names, so each
//! repository's keys are a clean prefix):
//! - `ecr/repos/NAME` → [`RepoRecord`]
//! - `ecr/images/NAME@DIGEST` → [`ImageRecord`] (the manifest's exact bytes included)
//! - `ecr/tags/NAME:TAG` → the digest
//! - `ecr/links/NAME@DIGEST` → [`Link`]: the repository holds this blob
//! - `ecr/uploads/ID` → [`UploadRecord`]
//!
//! Every write guards the repository record it read, so nothing is written into a repository
//! that a concurrent DeleteRepository removed.

use crate::manifest::{self, Parsed};
use crate::names::{check_repository_name, Digest, Reference};
use crate::{now_epoch, Error, Registry};
use berth_api::ecr;
use berth_api::ErrorKind;
use berth_store::{KeyValue, Txn, TxnOutcome};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub(crate) const CAS_ATTEMPTS: usize = 32;

pub fn repo_key(name: &str) -> String {
    format!("ecr/repos/{name}")
}
pub const REPOS: &str = "ecr/repos/";
/// Every record of the registry.
pub const ALL: &str = "ecr/";
pub fn image_key(name: &str, digest: &str) -> String {
    format!("ecr/images/{name}@{digest}")
}
pub fn images_of(name: &str) -> String {
    format!("ecr/images/{name}@")
}
pub const IMAGES: &str = "ecr/images/";
pub fn tag_key(name: &str, tag: &str) -> String {
    format!("ecr/tags/{name}:{tag}")
}
pub fn tags_of(name: &str) -> String {
    format!("ecr/tags/{name}:")
}
pub fn link_key(name: &str, digest: &str) -> String {
    format!("ecr/links/{name}@{digest}")
}
pub fn links_of(name: &str) -> String {
    format!("ecr/links/{name}@")
}
pub const LINKS: &str = "ecr/links/";
pub fn upload_key(id: &str) -> String {
    format!("ecr/uploads/{id}")
}
pub const UPLOADS: &str = "ecr/uploads/";

/// A repository as stored: ECR's output shape plus what hangs off it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub repository: ecr::Repository,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_updated_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default)]
    pub tags: Vec<ecr::Tag>,
    /// The last lifecycle policy preview (StartLifecyclePolicyPreview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_preview: Option<crate::account::Preview>,
}

impl RepoRecord {
    pub fn immutable(&self) -> bool {
        self.repository.image_tag_mutability.as_deref() == Some("IMMUTABLE")
    }
}

/// One manifest in one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: String,
    pub media_type: String,
    /// The manifest exactly as pushed: its digest is the digest of these bytes.
    pub manifest: String,
    pub pushed_at: f64,
    /// The sum of the blobs it references, as ECR's imageSizeInBytes.
    pub size: u64,
    pub blobs: Vec<String>,
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A repository's claim on a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub size: u64,
    pub linked_at: f64,
}

/// An upload in progress and the repository it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repository: String,
    pub started_at: f64,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, Error> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| Error::Internal(format!("stored record {} is unreadable: {e}", kv.key)))
}

fn tag_of_key<'a>(key: &'a str, name: &str) -> &'a str {
    &key[tags_of(name).len()..]
}

impl Registry {
    pub(crate) async fn commit(&self, txn: Txn) -> Result<bool, Error> {
        Ok(matches!(
            self.store.txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    fn repository_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            self.config.region, self.config.account_id
        )
    }

    /// `ENDPOINT/NAME`, what `docker push` takes.
    pub fn repository_uri(&self, name: &str) -> String {
        format!("{}/{name}", self.config.endpoint)
    }

    pub(crate) fn repo_not_found(&self, name: &str) -> Error {
        Error::ecr(
            ErrorKind::RepositoryNotFound,
            format!(
                "The repository with name '{name}' does not exist in the registry with id '{}'",
                self.config.account_id
            ),
        )
    }

    /// The repository, or RepositoryNotFound (NAME_UNKNOWN).
    pub async fn repository(&self, name: &str) -> Result<(RepoRecord, KeyValue), Error> {
        check_repository_name(name)?;
        match self.store.get(&repo_key(name)).await? {
            Some(kv) => Ok((decode(&kv)?, kv)),
            None => Err(self.repo_not_found(name)),
        }
    }

    /// Creates a repository. `mutability` is MUTABLE or IMMUTABLE.
    pub async fn create_repository(
        &self,
        name: &str,
        mutability: Option<String>,
        encryption: Option<ecr::EncryptionConfiguration>,
        scanning: Option<ecr::ImageScanningConfiguration>,
        tags: Vec<ecr::Tag>,
    ) -> Result<ecr::Repository, Error> {
        check_repository_name(name)
            .map_err(|e| Error::Invalid(format!("{e}; repository names match (?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")))?;
        let mutability = mutability.unwrap_or_else(|| "MUTABLE".into());
        berth_api::error::check_enum("imageTagMutability", &mutability, &["MUTABLE", "IMMUTABLE"])
            .map_err(Error::Ecr)?;
        let encryption = match encryption {
            None => ecr::EncryptionConfiguration {
                encryption_type: Some("AES256".into()),
                kms_key: None,
            },
            Some(e) => {
                let t = e.encryption_type.clone().unwrap_or_default();
                berth_api::error::check_enum("encryptionType", &t, &["AES256", "KMS", "KMS_DSSE"])
                    .map_err(Error::Ecr)?;
                if t == "AES256" && e.kms_key.is_some() {
                    return Err(Error::Invalid(
                        "kmsKey can only be given with encryptionType KMS or KMS_DSSE".into(),
                    ));
                }
                e
            }
        };
        check_tags(&tags)?;
        let repository = ecr::Repository {
            repository_arn: Some(self.repository_arn(name)),
            registry_id: Some(self.config.account_id.clone()),
            repository_name: Some(name.to_string()),
            repository_uri: Some(self.repository_uri(name)),
            created_at: Some(now_epoch()),
            image_tag_mutability: Some(mutability),
            image_scanning_configuration: Some(scanning.unwrap_or(
                ecr::ImageScanningConfiguration {
                    scan_on_push: Some(false),
                },
            )),
            encryption_configuration: Some(encryption),
            ..Default::default()
        };
        let record = RepoRecord {
            repository: repository.clone(),
            lifecycle_policy: None,
            lifecycle_updated_at: None,
            policy: None,
            tags,
            lifecycle_preview: None,
        };
        let key = repo_key(name);
        let txn = Txn::new()
            .unchanged(&key, None)
            .put(key.clone(), encode(&record)?);
        if !self.commit(txn).await? {
            return Err(Error::ecr(
                ErrorKind::RepositoryAlreadyExists,
                format!(
                    "The repository with name '{name}' already exists in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        }
        Ok(repository)
    }

    /// Rewrites a repository record with `change`, retrying on conflict.
    pub async fn update_repository(
        &self,
        name: &str,
        change: impl Fn(&mut RepoRecord) -> Result<(), Error>,
    ) -> Result<RepoRecord, Error> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, kv) = self.repository(name).await?;
            change(&mut record)?;
            if self
                .commit(Txn::new().replace(&kv, encode(&record)?))
                .await?
            {
                return Ok(record);
            }
        }
        Err(conflict(name))
    }

    /// Every repository, in name order.
    pub async fn repositories(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RepoRecord>, Error> {
        let start = after.map(repo_key);
        self.store
            .range(REPOS, start.as_deref(), limit)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Deletes a repository; with `force` its images go too, else it must have none.
    pub async fn delete_repository(&self, name: &str, force: bool) -> Result<RepoRecord, Error> {
        for _ in 0..CAS_ATTEMPTS {
            let (record, kv) = self.repository(name).await?;
            let images = self.store.range(&images_of(name), None, None).await?;
            if !images.is_empty() && !force {
                return Err(Error::ecr(
                    ErrorKind::RepositoryNotEmpty,
                    format!(
                        "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                        self.config.account_id
                    ),
                ));
            }
            let mut txn = Txn::new()
                .unchanged(&kv.key, Some(&kv))
                .delete(kv.key.clone());
            let statuses = crate::replication::statuses_of(name);
            for prefix in [
                images_of(name),
                tags_of(name),
                links_of(name),
                statuses.clone(),
            ] {
                for k in self.store.range(&prefix, None, None).await? {
                    txn = txn.delete(k.key);
                }
            }
            if self.commit(txn).await? {
                // A push that committed between the reads above and this commit left keys the
                // transaction did not name. No write can add more now (every write guards the
                // repository record, which is gone), so one more sweep leaves nothing behind.
                for prefix in [images_of(name), tags_of(name), links_of(name), statuses] {
                    self.store.delete_prefix(&prefix).await?;
                }
                return Ok(record);
            }
        }
        Err(conflict(name))
    }

    /// The size of `digest` if the repository holds it.
    pub async fn link(&self, name: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        Ok(
            match self.store.get(&link_key(name, digest.as_str())).await? {
                Some(kv) => Some(decode::<Link>(&kv)?.size),
                None => None,
            },
        )
    }

    pub(crate) async fn put_link(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Error> {
        for _ in 0..CAS_ATTEMPTS {
            let (_, repo) = self.repository(name).await?;
            let link = Link {
                size,
                linked_at: now_epoch(),
            };
            let txn = Txn::new()
                .unchanged(&repo.key, Some(&repo))
                .put(link_key(name, digest.as_str()), encode(&link)?);
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(conflict(name))
    }

    /// Starts an upload into `name`; returns its id.
    pub async fn start_upload(&self, name: &str) -> Result<String, Error> {
        self.repository(name).await?;
        let id = uuid::Uuid::new_v4().to_string();
        self.blobs.upload_start(&id).await?;
        let rec = UploadRecord {
            repository: name.to_string(),
            started_at: now_epoch(),
        };
        self.store
            .txn(Txn::new().put(upload_key(&id), encode(&rec)?))
            .await?;
        Ok(id)
    }

    /// Checks that upload `id` exists and is for `name`; returns its size so far.
    pub async fn upload_status(&self, name: &str, id: &str) -> Result<u64, Error> {
        let unknown =
            || Error::BlobUploadUnknown(format!("upload '{id}' is unknown to repository '{name}'"));
        let Some(kv) = self.store.get(&upload_key(id)).await? else {
            return Err(unknown());
        };
        let rec: UploadRecord = decode(&kv)?;
        if rec.repository != name {
            return Err(unknown());
        }
        self.blobs.upload_size(id).await?.ok_or_else(unknown)
    }

    /// Verifies and completes an upload: the blob becomes part of the repository.
    pub async fn commit_upload(&self, name: &str, id: &str, digest: &Digest) -> Result<u64, Error> {
        self.upload_status(name, id).await?;
        let result = self.blobs.upload_commit(id, digest).await;
        // The upload is gone either way.
        self.store.txn(Txn::new().delete(upload_key(id))).await?;
        let size = result?;
        self.put_link(name, digest, size).await?;
        Ok(size)
    }

    pub async fn cancel_upload(&self, name: &str, id: &str) -> Result<(), Error> {
        self.upload_status(name, id).await?;
        self.store.txn(Txn::new().delete(upload_key(id))).await?;
        self.blobs.upload_cancel(id).await
    }

    /// Makes a blob of `from` part of `to` without moving bytes. `false` if `from` lacks it.
    pub async fn mount(&self, from: &str, to: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        if check_repository_name(from).is_err() {
            return Ok(None);
        }
        let Some(size) = self.link(from, digest).await? else {
            return Ok(None);
        };
        if !self.blobs.exists(digest).await? {
            return Ok(None);
        }
        self.put_link(to, digest, size).await?;
        Ok(Some(size))
    }

    /// Removes the repository's claim on a blob (the bytes go at the next collection).
    pub async fn delete_blob(&self, name: &str, digest: &Digest) -> Result<(), Error> {
        self.repository(name).await?;
        let key = link_key(name, digest.as_str());
        if self.store.get(&key).await?.is_none() {
            return Err(Error::BlobUnknown(format!(
                "blob {digest} is unknown to repository '{name}'"
            )));
        }
        self.store.txn(Txn::new().delete(key)).await?;
        Ok(())
    }

    /// Stores a manifest under a tag or its digest; returns its digest.
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<(Digest, Parsed), Error> {
        let parsed = manifest::parse(bytes, content_type)?;
        let digest = Digest::of(bytes);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(Error::DigestInvalid(format!(
                    "the manifest's digest is {digest}, not {d}"
                )));
            }
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::ManifestInvalid("the manifest is not UTF-8".into()))?;
        let mut size = 0;
        for (blob, want) in &parsed.blobs {
            match self.link(name, blob).await? {
                Some(have) if have == *want => size += have,
                Some(have) => {
                    return Err(Error::ManifestInvalid(format!(
                        "the manifest gives blob {blob} size {want}, but it is {have} bytes"
                    )))
                }
                None => {
                    return Err(Error::ManifestBlobUnknown(format!(
                        "blob {blob} that the manifest references is not in repository '{name}'"
                    )))
                }
            }
        }
        for (child, _) in &parsed.children {
            if self
                .store
                .get(&image_key(name, child.as_str()))
                .await?
                .is_none()
            {
                return Err(Error::ManifestBlobUnknown(format!(
                    "manifest {child} that the index references is not in repository '{name}'"
                )));
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let (repo, repo_kv) = self.repository(name).await?;
            let mut txn = Txn::new().unchanged(&repo_kv.key, Some(&repo_kv));
            let ikey = image_key(name, digest.as_str());
            let existing = self.store.get(&ikey).await?;
            if existing.is_none() {
                let record = ImageRecord {
                    digest: digest.to_string(),
                    media_type: parsed.media_type.clone(),
                    manifest: text.clone(),
                    pushed_at: now_epoch(),
                    size,
                    blobs: parsed.blobs.iter().map(|(d, _)| d.to_string()).collect(),
                    children: parsed.children.iter().map(|(d, _)| d.to_string()).collect(),
                    subject: parsed.subject.as_ref().map(|d| d.to_string()),
                    artifact_type: parsed.artifact_type.clone(),
                    annotations: parsed.annotations.clone(),
                };
                txn = txn
                    .unchanged(&ikey, None)
                    .put(ikey.clone(), encode(&record)?);
            }
            if let Reference::Tag(tag) = reference {
                let tkey = tag_key(name, tag);
                let seen = self.store.get(&tkey).await?;
                match &seen {
                    Some(kv) if kv.value == digest.as_str().as_bytes() => {}
                    Some(_) if repo.immutable() => {
                        return Err(Error::TagImmutable(format!(
                            "The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the repository is immutable."
                        )))
                    }
                    _ => {
                        txn = txn
                            .unchanged(&tkey, seen.as_ref())
                            .put(tkey.clone(), digest.as_str().as_bytes().to_vec());
                    }
                }
            }
            if self.commit(txn).await? {
                return Ok((digest, parsed));
            }
        }
        Err(conflict(name))
    }

    /// The digest a tag points at.
    pub async fn resolve_tag(&self, name: &str, tag: &str) -> Result<Option<Digest>, Error> {
        match self.store.get(&tag_key(name, tag)).await? {
            Some(kv) => Ok(Some(Digest::parse(&String::from_utf8_lossy(&kv.value))?)),
            None => Ok(None),
        }
    }

    /// The manifest a reference names.
    pub async fn get_manifest(
        &self,
        name: &str,
        reference: &Reference,
    ) -> Result<ImageRecord, Error> {
        self.repository(name).await?;
        let unknown = |r: &str| {
            Error::ManifestUnknown(format!("manifest '{r}' is unknown to repository '{name}'"))
        };
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self.resolve_tag(name, t).await?.ok_or_else(|| unknown(t))?,
        };
        match self.store.get(&image_key(name, digest.as_str())).await? {
            Some(kv) => decode(&kv),
            None => Err(unknown(digest.as_str())),
        }
    }

    /// Deletes a manifest and every tag that points at it.
    pub async fn delete_manifest(&self, name: &str, digest: &Digest) -> Result<Vec<String>, Error> {
        for _ in 0..CAS_ATTEMPTS {
            let (_, repo_kv) = self.repository(name).await?;
            let ikey = image_key(name, digest.as_str());
            let Some(image) = self.store.get(&ikey).await? else {
                return Err(Error::ManifestUnknown(format!(
                    "manifest '{digest}' is unknown to repository '{name}'"
                )));
            };
            let mut txn = Txn::new()
                .unchanged(&repo_kv.key, Some(&repo_kv))
                .unchanged(&ikey, Some(&image))
                .delete(ikey.clone())
                .delete(crate::replication::status_key(name, digest.as_str()));
            let mut removed = Vec::new();
            for kv in self.store.range(&tags_of(name), None, None).await? {
                if kv.value == digest.as_str().as_bytes() {
                    removed.push(tag_of_key(&kv.key, name).to_string());
                    txn = txn.unchanged(&kv.key, Some(&kv)).delete(kv.key.clone());
                }
            }
            if self.commit(txn).await? {
                return Ok(removed);
            }
        }
        Err(conflict(name))
    }

    /// Removes a tag, leaving the manifest.
    pub async fn delete_tag(&self, name: &str, tag: &str) -> Result<Digest, Error> {
        self.repository(name).await?;
        let key = tag_key(name, tag);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(Error::ManifestUnknown(format!(
                "tag '{tag}' is unknown to repository '{name}'"
            )));
        };
        let digest = Digest::parse(&String::from_utf8_lossy(&kv.value))?;
        self.store
            .txn(Txn::new().unchanged(&key, Some(&kv)).delete(key.clone()))
            .await?;
        Ok(digest)
    }

    /// Every tag of a repository and its digest, in tag order.
    pub async fn tags(&self, name: &str) -> Result<Vec<(String, Digest)>, Error> {
        self.repository(name).await?;
        let mut out = Vec::new();
        for kv in self.store.range(&tags_of(name), None, None).await? {
            let digest = Digest::parse(&String::from_utf8_lossy(&kv.value))?;
            out.push((tag_of_key(&kv.key, name).to_string(), digest));
        }
        Ok(out)
    }

    /// Every image of a repository with its tags, in digest order.
    pub async fn images(&self, name: &str) -> Result<Vec<(ImageRecord, Vec<String>)>, Error> {
        let tags = self.tags(name).await?;
        let mut out = Vec::new();
        for kv in self.store.range(&images_of(name), None, None).await? {
            let image: ImageRecord = decode(&kv)?;
            let t = tags
                .iter()
                .filter(|(_, d)| d.as_str() == image.digest)
                .map(|(t, _)| t.clone())
                .collect();
            out.push((image, t));
        }
        Ok(out)
    }
}

/// What a read-modify-write of repository `name` answers when it lost every retry.
fn conflict(name: &str) -> Error {
    Error::Internal(format!(
        "repository {name}: too many concurrent changes, try again"
    ))
}

/// ECR's tag rules: at most 50, keys 1..=128 and values 0..=256 characters.
pub(crate) fn check_tags(tags: &[ecr::Tag]) -> Result<(), Error> {
    if tags.len() > 50 {
        return Err(Error::ecr(
            ErrorKind::TooManyTags,
            format!("{} tags given; a resource may have at most 50", tags.len()),
        ));
    }
    for t in tags {
        let key = t.key.as_deref().unwrap_or("");
        if key.is_empty() || key.chars().count() > 128 {
            return Err(Error::ecr(
                ErrorKind::InvalidTagParameter,
                format!("tag key '{key}' must be 1 to 128 characters"),
            ));
        }
        if t.value.as_deref().unwrap_or("").chars().count() > 256 {
            return Err(Error::ecr(
                ErrorKind::InvalidTagParameter,
                format!("the value of tag '{key}' is longer than 256 characters"),
            ));
        }
    }
    Ok(())
}
