//! ECR's JSON API: one exhaustive match over [`EcrRequest`], each arm a call into
//! [`crate::images`]. Answers are ECR's output shapes; errors ECR's exceptions.

use crate::images::{check_tags, RepoRecord};
use crate::names::{check_tag, Digest, Reference};
use crate::{lifecycle, Error, Principal, Registry};
use base64::Engine as _;
use berth_api::ecr::{self, EcrRequest};
use berth_api::{EcsError, ErrorKind};
use std::time::UNIX_EPOCH;

/// Largest part UploadLayerPart takes, and the partSize InitiateLayerUpload advertises.
pub const PART_SIZE: i64 = 10 * 1024 * 1024;

fn json<T: serde::Serialize>(v: T) -> Result<Vec<u8>, EcsError> {
    serde_json::to_vec(&v).map_err(|e| EcsError::server(format!("encoding the response: {e}")))
}

fn required<'a>(v: &'a Option<String>, what: &str) -> Result<&'a str, Error> {
    v.as_deref()
        .ok_or_else(|| Error::Invalid(format!("{what} must be given")))
}

fn max_results(v: Option<i32>, default: usize) -> Result<usize, Error> {
    match v {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::Invalid(format!(
            "maxResults {n} must be between 1 and 1000"
        ))),
    }
}

/// A template from Create- or UpdateRepositoryCreationTemplate's request: the two requests
/// carry the same members under different generated types.
macro_rules! template_of {
    ($r:expr) => {{
        let r = $r;
        ecr::RepositoryCreationTemplate {
            prefix: r.prefix,
            applied_for: r.applied_for,
            custom_role_arn: r.custom_role_arn,
            description: r.description,
            encryption_configuration: r.encryption_configuration,
            image_tag_mutability: r.image_tag_mutability,
            image_tag_mutability_exclusion_filters: r.image_tag_mutability_exclusion_filters,
            lifecycle_policy: r.lifecycle_policy,
            repository_policy: r.repository_policy,
            resource_tags: r.resource_tags,
            created_at: None,
            updated_at: None,
        }
    }};
}

fn image_id(digest: &str, tag: Option<&str>) -> ecr::ImageIdentifier {
    ecr::ImageIdentifier {
        image_digest: Some(digest.to_string()),
        image_tag: tag.map(str::to_string),
    }
}

impl Registry {
    /// Runs one ECR operation for `caller`.
    pub async fn handle_ecr(
        &self,
        caller: &Principal,
        req: EcrRequest,
    ) -> Result<Vec<u8>, EcsError> {
        if caller.instance.is_some() {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                "an agent's key may only pull images from the registry, not call ECR's API",
            ));
        }
        self.ecr(caller, req).await.map_err(|e| e.to_ecr())
    }

    async fn ecr(&self, caller: &Principal, req: EcrRequest) -> Result<Vec<u8>, Error> {
        let out = match req {
            EcrRequest::CreateRepository(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                if let Some(m) = &r.image_tag_mutability {
                    self.check_mutability(m)?;
                }
                let repository = self
                    .create_repository(
                        name,
                        r.image_tag_mutability,
                        r.encryption_configuration,
                        r.image_scanning_configuration,
                        r.tags.unwrap_or_default(),
                    )
                    .await?;
                json(ecr::CreateRepositoryResponse {
                    repository: Some(repository),
                })
            }
            EcrRequest::DescribeRepositories(r) => {
                let limit = max_results(r.max_results, 100)?;
                let repositories: Vec<ecr::Repository> = match r.repository_names {
                    Some(names) => {
                        if r.next_token.is_some() || r.max_results.is_some() {
                            return Err(Error::Invalid(
                                "nextToken and maxResults cannot be used with repositoryNames"
                                    .into(),
                            ));
                        }
                        let mut out = Vec::new();
                        for n in names {
                            out.push(self.repository(&n).await?.0.repository);
                        }
                        out
                    }
                    None => {
                        let mut page = self
                            .repositories(r.next_token.as_deref(), Some(limit + 1))
                            .await?;
                        let more = page.len() > limit;
                        page.truncate(limit);
                        let next = if more {
                            page.last()
                                .and_then(|x| x.repository.repository_name.clone())
                        } else {
                            None
                        };
                        return json(ecr::DescribeRepositoriesResponse {
                            repositories: Some(page.into_iter().map(|x| x.repository).collect()),
                            next_token: next,
                        })
                        .map_err(Error::Ecr);
                    }
                };
                json(ecr::DescribeRepositoriesResponse {
                    repositories: Some(repositories),
                    next_token: None,
                })
            }
            EcrRequest::DeleteRepository(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let record = self
                    .delete_repository(name, r.force.unwrap_or(false))
                    .await?;
                json(ecr::DeleteRepositoryResponse {
                    repository: Some(record.repository),
                })
            }
            EcrRequest::PutImageTagMutability(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let m = required(&r.image_tag_mutability, "imageTagMutability")?.to_string();
                self.check_mutability(&m)?;
                let m2 = m.clone();
                self.update_repository(name, move |rec| {
                    rec.repository.image_tag_mutability = Some(m2.clone());
                    Ok(())
                })
                .await?;
                json(ecr::PutImageTagMutabilityResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    image_tag_mutability: Some(m),
                    image_tag_mutability_exclusion_filters: None,
                })
            }
            EcrRequest::ListImages(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let limit = max_results(r.max_results, 100)?;
                let status = self.tag_status(r.filter.and_then(|f| f.tag_status))?;
                let mut ids = Vec::new();
                for (image, tags) in self.images(name).await? {
                    if tags.is_empty() {
                        if status != "TAGGED" {
                            ids.push(image_id(&image.digest, None));
                        }
                    } else if status != "UNTAGGED" {
                        for t in &tags {
                            ids.push(image_id(&image.digest, Some(t)));
                        }
                    }
                }
                let (page, next) = page_of(ids, r.next_token.as_deref(), limit, |i| {
                    format!(
                        "{}|{}",
                        i.image_digest.as_deref().unwrap_or(""),
                        i.image_tag.as_deref().unwrap_or("")
                    )
                })?;
                json(ecr::ListImagesResponse {
                    image_ids: Some(page),
                    next_token: next,
                })
            }
            EcrRequest::DescribeImages(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let images = self.images(name).await?;
                let detail =
                    |image: &crate::images::ImageRecord, tags: &[String]| ecr::ImageDetail {
                        registry_id: Some(self.config.account_id.clone()),
                        repository_name: Some(name.to_string()),
                        image_digest: Some(image.digest.clone()),
                        image_tags: (!tags.is_empty()).then(|| tags.to_vec()),
                        image_size_in_bytes: Some(image.size as i64),
                        image_pushed_at: Some(image.pushed_at),
                        image_manifest_media_type: Some(image.media_type.clone()),
                        artifact_media_type: image.artifact_type.clone(),
                        subject_manifest_digest: image.subject.clone(),
                        image_status: Some("ACTIVE".into()),
                        ..Default::default()
                    };
                if let Some(ids) = r.image_ids {
                    if r.next_token.is_some() || r.max_results.is_some() {
                        return Err(Error::Invalid(
                            "nextToken and maxResults cannot be used with imageIds".into(),
                        ));
                    }
                    let mut details = Vec::new();
                    for id in ids {
                        let (image, tags) = self.find(name, &images, &id).map_err(|(_, e)| e)?;
                        details.push(detail(image, tags));
                    }
                    json(ecr::DescribeImagesResponse {
                        image_details: Some(details),
                        next_token: None,
                    })
                } else {
                    let limit = max_results(r.max_results, 100)?;
                    let status = self.tag_status(r.filter.and_then(|f| f.tag_status))?;
                    let details: Vec<ecr::ImageDetail> = images
                        .iter()
                        .filter(|(_, t)| match status.as_str() {
                            "TAGGED" => !t.is_empty(),
                            "UNTAGGED" => t.is_empty(),
                            _ => true,
                        })
                        .map(|(i, t)| detail(i, t))
                        .collect();
                    let (page, next) = page_of(details, r.next_token.as_deref(), limit, |d| {
                        d.image_digest.clone().unwrap_or_default()
                    })?;
                    json(ecr::DescribeImagesResponse {
                        image_details: Some(page),
                        next_token: next,
                    })
                }
            }
            EcrRequest::BatchGetImage(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let images = self.images(name).await?;
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for id in r.image_ids.unwrap_or_default() {
                    match self.find(name, &images, &id) {
                        Ok((image, _)) => {
                            if let Some(accepted) = &r.accepted_media_types {
                                if !accepted.contains(&image.media_type) {
                                    failures.push(failure(
                                        &id,
                                        "UnsupportedImageType",
                                        &format!(
                                        "the image's media type {} is not among the accepted ones",
                                        image.media_type
                                    ),
                                    ));
                                    continue;
                                }
                            }
                            found.push(ecr::Image {
                                registry_id: Some(self.config.account_id.clone()),
                                repository_name: Some(name.to_string()),
                                image_id: Some(image_id(&image.digest, id.image_tag.as_deref())),
                                image_manifest: Some(image.manifest.clone()),
                                image_manifest_media_type: Some(image.media_type.clone()),
                            });
                        }
                        Err(e) => failures.push(failure_for(&id, &e)),
                    }
                }
                json(ecr::BatchGetImageResponse {
                    images: Some(found),
                    failures: Some(failures),
                })
            }
            EcrRequest::BatchDeleteImage(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let mut deleted = Vec::new();
                let mut failures = Vec::new();
                for id in r.image_ids.unwrap_or_default() {
                    let images = self.images(name).await?;
                    let (digest, tags) = match self.find(name, &images, &id) {
                        Ok((image, tags)) => (image.digest.clone(), tags.to_vec()),
                        Err(e) => {
                            failures.push(failure_for(&id, &e));
                            continue;
                        }
                    };
                    let digest = Digest::parse(&digest)?;
                    match &id.image_tag {
                        // A tag: remove it; the image goes with its last tag.
                        Some(tag) if tags.len() > 1 => {
                            self.delete_tag(name, tag).await?;
                            deleted.push(image_id(digest.as_str(), Some(tag)));
                        }
                        _ => {
                            let removed = self.delete_manifest(name, &digest).await?;
                            if removed.is_empty() {
                                deleted.push(image_id(digest.as_str(), None));
                            }
                            for t in removed {
                                deleted.push(image_id(digest.as_str(), Some(&t)));
                            }
                        }
                    }
                }
                json(ecr::BatchDeleteImageResponse {
                    image_ids: Some(deleted),
                    failures: Some(failures),
                })
            }
            EcrRequest::PutImage(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let manifest = required(&r.image_manifest, "imageManifest")?;
                let digest = Digest::of(manifest.as_bytes());
                if let Some(d) = &r.image_digest {
                    if d != digest.as_str() {
                        return Err(Error::ecr(
                            ErrorKind::ImageDigestDoesNotMatch,
                            format!("the manifest's digest is {digest}, not {d}"),
                        ));
                    }
                }
                let reference = match &r.image_tag {
                    Some(t) => {
                        check_tag(t)?;
                        Reference::Tag(t.clone())
                    }
                    None => Reference::Digest(digest.clone()),
                };
                // Nothing would change: ECR says so.
                let already = match &reference {
                    Reference::Tag(t) => self.resolve_tag(name, t).await? == Some(digest.clone()),
                    Reference::Digest(d) => self
                        .get_manifest(name, &Reference::Digest(d.clone()))
                        .await
                        .is_ok(),
                };
                if already {
                    return Err(Error::ecr(
                        ErrorKind::ImageAlreadyExists,
                        format!(
                            "Image with digest '{digest}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                            r.image_tag.as_deref().unwrap_or("null"),
                            self.config.account_id
                        ),
                    ));
                }
                let (digest, parsed) = self
                    .put_manifest(
                        name,
                        &reference,
                        r.image_manifest_media_type.as_deref(),
                        manifest.as_bytes(),
                    )
                    .await?;
                self.replicate_push(name, &digest, &reference).await;
                self.enforce_lifecycle(name).await.ok();
                json(ecr::PutImageResponse {
                    image: Some(ecr::Image {
                        registry_id: Some(self.config.account_id.clone()),
                        repository_name: Some(name.to_string()),
                        image_id: Some(image_id(digest.as_str(), r.image_tag.as_deref())),
                        image_manifest: Some(manifest.to_string()),
                        image_manifest_media_type: Some(parsed.media_type),
                    }),
                })
            }
            EcrRequest::BatchCheckLayerAvailability(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                self.repository(name).await?;
                let mut layers = Vec::new();
                let mut failures = Vec::new();
                for d in r.layer_digests.unwrap_or_default() {
                    let digest = match Digest::parse(&d) {
                        Ok(x) => x,
                        Err(e) => {
                            failures.push(ecr::LayerFailure {
                                layer_digest: Some(d.clone()),
                                failure_code: Some("InvalidLayerDigest".into()),
                                failure_reason: Some(e.to_string()),
                            });
                            continue;
                        }
                    };
                    match self.link(name, &digest).await? {
                        Some(size) => layers.push(ecr::Layer {
                            layer_digest: Some(d),
                            layer_availability: Some("AVAILABLE".into()),
                            layer_size: Some(size as i64),
                            media_type: None,
                        }),
                        None => failures.push(ecr::LayerFailure {
                            layer_digest: Some(d),
                            failure_code: Some("MissingLayerDigest".into()),
                            failure_reason: Some("the repository does not hold this layer".into()),
                        }),
                    }
                }
                json(ecr::BatchCheckLayerAvailabilityResponse {
                    layers: Some(layers),
                    failures: Some(failures),
                })
            }
            EcrRequest::InitiateLayerUpload(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let id = self.start_upload(name).await?;
                json(ecr::InitiateLayerUploadResponse {
                    upload_id: Some(id),
                    part_size: Some(PART_SIZE),
                })
            }
            EcrRequest::UploadLayerPart(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let id = required(&r.upload_id, "uploadId")?;
                let blob = base64::engine::general_purpose::STANDARD
                    .decode(required(&r.layer_part_blob, "layerPartBlob")?)
                    .map_err(|e| Error::Invalid(format!("layerPartBlob is not base64: {e}")))?;
                let (first, last) = (
                    r.part_first_byte.unwrap_or(-1),
                    r.part_last_byte.unwrap_or(-1),
                );
                if first < 0 || last < first || (last - first + 1) as usize != blob.len() {
                    return Err(Error::ecr(
                        ErrorKind::InvalidLayerPart,
                        format!(
                            "partFirstByte {first} and partLastByte {last} do not describe the {} bytes sent",
                            blob.len()
                        ),
                    ));
                }
                if blob.len() as i64 > PART_SIZE {
                    return Err(Error::ecr(
                        ErrorKind::InvalidLayerPart,
                        format!("a part may be at most {PART_SIZE} bytes"),
                    ));
                }
                let size = self.upload_status(name, id).await?;
                if first as u64 != size {
                    return Err(Error::ecr(
                        ErrorKind::InvalidLayerPart,
                        format!("the part starts at byte {first}, but the upload holds {size} bytes; the next part must start at {size}"),
                    ));
                }
                let stream = futures::stream::iter([Ok(bytes::Bytes::from(blob))]);
                let size = self
                    .blobs
                    .upload_append(id, first as u64, Box::pin(stream))
                    .await?;
                json(ecr::UploadLayerPartResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    upload_id: Some(id.to_string()),
                    last_byte_received: Some(size as i64 - 1),
                })
            }
            EcrRequest::CompleteLayerUpload(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let id = required(&r.upload_id, "uploadId")?;
                let digests = r.layer_digests.unwrap_or_default();
                let [d] = digests.as_slice() else {
                    return Err(Error::Invalid(format!(
                        "layerDigests must hold exactly one digest, not {}",
                        digests.len()
                    )));
                };
                let digest = Digest::parse(d)
                    .map_err(|e| Error::ecr(ErrorKind::InvalidLayer, e.to_string()))?;
                let size = self.upload_status(name, id).await?;
                if size == 0 {
                    return Err(Error::ecr(
                        ErrorKind::EmptyUpload,
                        format!("upload '{id}' holds no bytes"),
                    ));
                }
                if self.link(name, &digest).await?.is_some() {
                    let _ = self.cancel_upload(name, id).await;
                    return Err(Error::ecr(
                        ErrorKind::LayerAlreadyExists,
                        format!(
                            "layer {digest} already exists in the repository with name '{name}'"
                        ),
                    ));
                }
                self.commit_upload(name, id, &digest).await?;
                json(ecr::CompleteLayerUploadResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    upload_id: Some(id.to_string()),
                    layer_digest: Some(digest.to_string()),
                })
            }
            EcrRequest::GetDownloadUrlForLayer(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let d = required(&r.layer_digest, "layerDigest")?;
                self.repository(name).await?;
                let digest = Digest::parse(d)?;
                if self.link(name, &digest).await?.is_none() {
                    return Err(Error::ecr(
                        ErrorKind::LayersNotFound,
                        format!("layer {digest} is not in the repository with name '{name}'"),
                    ));
                }
                let (password, _) = self.issue_password(caller);
                json(ecr::GetDownloadUrlForLayerResponse {
                    download_url: Some(format!(
                        "http://{}/v2/{name}/blobs/{digest}?berth-token={password}",
                        self.config.endpoint
                    )),
                    layer_digest: Some(digest.to_string()),
                })
            }
            EcrRequest::PutLifecyclePolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let text = required(&r.lifecycle_policy_text, "lifecyclePolicyText")?.to_string();
                check_length("lifecyclePolicyText", &text, 100, 30720)?;
                lifecycle::parse(&text)?;
                let t = text.clone();
                self.update_repository(name, move |rec| {
                    rec.lifecycle_policy = Some(t.clone());
                    Ok(())
                })
                .await?;
                self.enforce_lifecycle(name).await.ok();
                json(ecr::PutLifecyclePolicyResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    lifecycle_policy_text: Some(text),
                })
            }
            EcrRequest::GetLifecyclePolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let (rec, _) = self.repository(name).await?;
                self.lifecycle_reply(name, &rec)?
            }
            EcrRequest::DeleteLifecyclePolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let (rec, _) = self.repository(name).await?;
                let reply = self.lifecycle_reply(name, &rec)?;
                self.update_repository(name, |rec| {
                    rec.lifecycle_policy = None;
                    rec.lifecycle_updated_at = None;
                    Ok(())
                })
                .await?;
                reply
            }
            EcrRequest::StartLifecyclePolicyPreview(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                json(
                    self.start_lifecycle_preview(name, r.lifecycle_policy_text.clone())
                        .await?,
                )
            }
            EcrRequest::GetLifecyclePolicyPreview(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                json(self.lifecycle_preview(name, &r).await?)
            }
            EcrRequest::PutRegistryPolicy(r) => {
                let text = required(&r.policy_text, "policyText")?;
                self.put_registry_policy(text).await?;
                json(ecr::PutRegistryPolicyResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    policy_text: Some(text.to_string()),
                })
            }
            EcrRequest::GetRegistryPolicy(_) => json(ecr::GetRegistryPolicyResponse {
                registry_id: Some(self.config.account_id.clone()),
                policy_text: Some(self.registry_policy().await?),
            }),
            EcrRequest::DeleteRegistryPolicy(_) => json(ecr::DeleteRegistryPolicyResponse {
                registry_id: Some(self.config.account_id.clone()),
                policy_text: Some(self.delete_registry_policy().await?),
            }),
            EcrRequest::DescribeRegistry(_) => json(ecr::DescribeRegistryResponse {
                registry_id: Some(self.config.account_id.clone()),
                replication_configuration: Some(self.replication_configuration().await?),
            }),
            EcrRequest::CreateRepositoryCreationTemplate(r) => {
                let t = self.create_template(template_of!(r)).await?;
                json(ecr::CreateRepositoryCreationTemplateResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_creation_template: Some(t),
                })
            }
            EcrRequest::UpdateRepositoryCreationTemplate(r) => {
                let t = self.update_template(template_of!(r)).await?;
                json(ecr::UpdateRepositoryCreationTemplateResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_creation_template: Some(t),
                })
            }
            EcrRequest::DeleteRepositoryCreationTemplate(r) => {
                let prefix = required(&r.prefix, "prefix")?;
                json(ecr::DeleteRepositoryCreationTemplateResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_creation_template: Some(self.delete_template(prefix).await?),
                })
            }
            EcrRequest::DescribeRepositoryCreationTemplates(r) => {
                let limit = max_results(r.max_results, 100)?;
                let all = self.describe_templates(r.prefixes).await?;
                let (page, next) = page_of(all, r.next_token.as_deref(), limit, |t| {
                    t.prefix.clone().unwrap_or_default()
                })?;
                json(ecr::DescribeRepositoryCreationTemplatesResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_creation_templates: Some(page),
                    next_token: next,
                })
            }
            EcrRequest::PutReplicationConfiguration(r) => {
                let config = r
                    .replication_configuration
                    .ok_or_else(|| Error::Invalid("replicationConfiguration is required".into()))?;
                json(ecr::PutReplicationConfigurationResponse {
                    replication_configuration: Some(
                        self.put_replication_configuration(config).await?,
                    ),
                })
            }
            EcrRequest::DescribeImageReplicationStatus(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let id = r
                    .image_id
                    .as_ref()
                    .ok_or_else(|| Error::Invalid("imageId must be given".into()))?;
                let images = self.images(name).await?;
                let (image, _) = self.find(name, &images, id).map_err(|(_, e)| e)?;
                let digest = Digest::parse(&image.digest)?;
                json(ecr::DescribeImageReplicationStatusResponse {
                    repository_name: Some(name.to_string()),
                    image_id: Some(image_id(digest.as_str(), id.image_tag.as_deref())),
                    replication_statuses: Some(self.replication_statuses(name, &digest).await?),
                })
            }
            EcrRequest::GetRegistryScanningConfiguration(_) => {
                json(ecr::GetRegistryScanningConfigurationResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    scanning_configuration: Some(self.scanning_configuration().await?),
                })
            }
            EcrRequest::PutRegistryScanningConfiguration(r) => {
                json(ecr::PutRegistryScanningConfigurationResponse {
                    registry_scanning_configuration: Some(
                        self.put_scanning_configuration(r.scan_type, r.rules)
                            .await?,
                    ),
                })
            }
            EcrRequest::DescribeImageScanFindings(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let id = r
                    .image_id
                    .as_ref()
                    .ok_or_else(|| Error::Invalid("imageId must be given".into()))?;
                json(self.scan_findings(name, id).await?)
            }
            EcrRequest::CreatePullThroughCacheRule(r) => {
                let rule = self.create_pull_through_rule(r).await?;
                json(ecr::CreatePullThroughCacheRuleResponse {
                    ecr_repository_prefix: rule.ecr_repository_prefix,
                    upstream_registry_url: rule.upstream_registry_url,
                    upstream_registry: rule.upstream_registry,
                    upstream_repository_prefix: rule.upstream_repository_prefix,
                    credential_arn: rule.credential_arn,
                    custom_role_arn: rule.custom_role_arn,
                    registry_id: rule.registry_id,
                    created_at: rule.created_at,
                })
            }
            EcrRequest::DescribePullThroughCacheRules(r) => {
                let limit = max_results(r.max_results, 100)?;
                let rules = self
                    .describe_pull_through_rules(r.ecr_repository_prefixes)
                    .await?;
                let (page, next) = page_of(rules, r.next_token.as_deref(), limit, |r| {
                    r.ecr_repository_prefix.clone().unwrap_or_default()
                })?;
                json(ecr::DescribePullThroughCacheRulesResponse {
                    pull_through_cache_rules: Some(page),
                    next_token: next,
                })
            }
            EcrRequest::UpdatePullThroughCacheRule(r) => {
                let prefix = required(&r.ecr_repository_prefix, "ecrRepositoryPrefix")?;
                let rule = self
                    .update_pull_through_rule(
                        prefix,
                        r.credential_arn.clone(),
                        r.custom_role_arn.clone(),
                    )
                    .await?;
                json(ecr::UpdatePullThroughCacheRuleResponse {
                    ecr_repository_prefix: rule.ecr_repository_prefix,
                    upstream_repository_prefix: rule.upstream_repository_prefix,
                    credential_arn: rule.credential_arn,
                    custom_role_arn: rule.custom_role_arn,
                    registry_id: rule.registry_id,
                    updated_at: rule.updated_at,
                })
            }
            EcrRequest::DeletePullThroughCacheRule(r) => {
                let prefix = required(&r.ecr_repository_prefix, "ecrRepositoryPrefix")?;
                let rule = self.delete_pull_through_rule(prefix).await?;
                json(ecr::DeletePullThroughCacheRuleResponse {
                    ecr_repository_prefix: rule.ecr_repository_prefix,
                    upstream_registry_url: rule.upstream_registry_url,
                    upstream_repository_prefix: rule.upstream_repository_prefix,
                    credential_arn: rule.credential_arn,
                    custom_role_arn: rule.custom_role_arn,
                    registry_id: rule.registry_id,
                    created_at: rule.created_at,
                })
            }
            // The rule is well formed, and its upstream is out of this server's reach.
            EcrRequest::ValidatePullThroughCacheRule(r) => {
                let prefix = required(&r.ecr_repository_prefix, "ecrRepositoryPrefix")?;
                let rule = self
                    .describe_pull_through_rules(Some(vec![prefix.to_string()]))
                    .await?
                    .pop()
                    .ok_or_else(|| Error::Invalid(format!("no rule '{prefix}'")))?;
                json(ecr::ValidatePullThroughCacheRuleResponse {
                    failure: Some(format!(
                        "Berth cannot reach upstream registries: {} is out of this server's reach",
                        rule.upstream_registry_url.as_deref().unwrap_or_default()
                    )),
                    is_valid: Some(false),
                    ecr_repository_prefix: rule.ecr_repository_prefix,
                    upstream_registry_url: rule.upstream_registry_url,
                    upstream_repository_prefix: rule.upstream_repository_prefix,
                    credential_arn: rule.credential_arn,
                    custom_role_arn: rule.custom_role_arn,
                    registry_id: rule.registry_id,
                })
            }
            EcrRequest::PutImageScanningConfiguration(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let config = r.image_scanning_configuration.clone().ok_or_else(|| {
                    Error::Invalid("imageScanningConfiguration must be given".into())
                })?;
                let c = config.clone();
                self.update_repository(name, move |rec| {
                    rec.repository.image_scanning_configuration = Some(c.clone());
                    Ok(())
                })
                .await?;
                json(ecr::PutImageScanningConfigurationResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    image_scanning_configuration: Some(config),
                })
            }
            EcrRequest::BatchGetRepositoryScanningConfiguration(r) => {
                let names = r.repository_names.clone().unwrap_or_default();
                if names.is_empty() || names.len() > 25 {
                    return Err(Error::Invalid(format!(
                        "repositoryNames must name 1 to 25 repositories, not {}",
                        names.len()
                    )));
                }
                let registry = self.scanning_configuration().await?;
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for name in names {
                    match self.repository(&name).await {
                        Ok((rec, _)) => found.push(repository_scanning(&rec, &registry)),
                        Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryNotFound => failures
                            .push(ecr::RepositoryScanningConfigurationFailure {
                                repository_name: Some(name),
                                failure_code: Some("REPOSITORY_NOT_FOUND".into()),
                                failure_reason: Some("REPOSITORY_NOT_FOUND".into()),
                            }),
                        Err(e) => return Err(e),
                    }
                }
                json(ecr::BatchGetRepositoryScanningConfigurationResponse {
                    scanning_configurations: Some(found),
                    failures: Some(failures),
                })
            }
            EcrRequest::SetRepositoryPolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let text = required(&r.policy_text, "policyText")?.to_string();
                check_length("policyText", &text, 0, 10240)?;
                let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    Error::Invalid(format!("Invalid repository policy provided: not JSON: {e}"))
                })?;
                if doc.get("Statement").is_none() {
                    return Err(Error::Invalid(
                        "Invalid repository policy provided: it has no 'Statement'".into(),
                    ));
                }
                let t = text.clone();
                self.update_repository(name, move |rec| {
                    rec.policy = Some(t.clone());
                    Ok(())
                })
                .await?;
                json(ecr::SetRepositoryPolicyResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    policy_text: Some(text),
                })
            }
            EcrRequest::GetRepositoryPolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let (rec, _) = self.repository(name).await?;
                let text = self.policy_of(name, &rec)?;
                json(ecr::GetRepositoryPolicyResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    policy_text: Some(text),
                })
            }
            EcrRequest::DeleteRepositoryPolicy(r) => {
                let name = required(&r.repository_name, "repositoryName")?;
                let (rec, _) = self.repository(name).await?;
                let text = self.policy_of(name, &rec)?;
                self.update_repository(name, |rec| {
                    rec.policy = None;
                    Ok(())
                })
                .await?;
                json(ecr::DeleteRepositoryPolicyResponse {
                    registry_id: Some(self.config.account_id.clone()),
                    repository_name: Some(name.to_string()),
                    policy_text: Some(text),
                })
            }
            EcrRequest::GetAuthorizationToken(r) => {
                for id in r.registry_ids.unwrap_or_default() {
                    if id != self.config.account_id {
                        return Err(Error::Invalid(format!(
                            "registry '{id}' is not this registry ('{}')",
                            self.config.account_id
                        )));
                    }
                }
                let (password, expires) = self.issue_password(caller);
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
                let expires_at = expires
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                json(ecr::GetAuthorizationTokenResponse {
                    authorization_data: Some(vec![ecr::AuthorizationData {
                        authorization_token: Some(token),
                        expires_at: Some(expires_at),
                        proxy_endpoint: Some(format!("http://{}", self.config.endpoint)),
                    }]),
                })
            }
            EcrRequest::ListTagsForResource(r) => {
                let name = self.name_of_arn(required(&r.resource_arn, "resourceArn")?)?;
                let (rec, _) = self.repository(&name).await?;
                json(ecr::ListTagsForResourceResponse {
                    tags: Some(rec.tags),
                })
            }
            EcrRequest::TagResource(r) => {
                let name = self.name_of_arn(required(&r.resource_arn, "resourceArn")?)?;
                let new = r.tags.unwrap_or_default();
                self.update_repository(&name, move |rec| {
                    for t in &new {
                        rec.tags.retain(|x| x.key != t.key);
                        rec.tags.push(t.clone());
                    }
                    check_tags(&rec.tags)
                })
                .await?;
                json(ecr::TagResourceResponse {})
            }
            EcrRequest::UntagResource(r) => {
                let name = self.name_of_arn(required(&r.resource_arn, "resourceArn")?)?;
                let keys = r.tag_keys.unwrap_or_default();
                self.update_repository(&name, move |rec| {
                    rec.tags
                        .retain(|t| !keys.iter().any(|k| Some(k) == t.key.as_ref()));
                    Ok(())
                })
                .await?;
                json(ecr::UntagResourceResponse {})
            }
        };
        out.map_err(Error::Ecr)
    }

    fn check_mutability(&self, m: &str) -> Result<(), Error> {
        berth_api::error::check_enum(
            "imageTagMutability",
            m,
            berth_api::ecr::enums::IMAGE_TAG_MUTABILITY,
        )
        .map_err(Error::Ecr)?;
        if m != "MUTABLE" && m != "IMMUTABLE" {
            return Err(Error::Invalid(format!(
                "imageTagMutability '{m}' (with exclusion filters) is not supported by Berth yet; use MUTABLE or IMMUTABLE"
            )));
        }
        Ok(())
    }

    fn tag_status(&self, s: Option<String>) -> Result<String, Error> {
        let s = s.unwrap_or_else(|| "ANY".into());
        berth_api::error::check_enum("tagStatus", &s, &["TAGGED", "UNTAGGED", "ANY"])
            .map_err(Error::Ecr)?;
        Ok(s)
    }

    /// The image an identifier names; on a miss, ECR's failure code (what BatchGetImage and
    /// BatchDeleteImage report) and the error the other operations answer.
    pub(crate) fn find<'a>(
        &self,
        name: &str,
        images: &'a [(crate::images::ImageRecord, Vec<String>)],
        id: &ecr::ImageIdentifier,
    ) -> Result<(&'a crate::images::ImageRecord, &'a [String]), (&'static str, Error)> {
        let not_found = || {
            Error::ecr(
                ErrorKind::ImageNotFound,
                format!(
                    "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{name}' in the registry with id '{}'",
                    id.image_digest.as_deref().unwrap_or("null"),
                    id.image_tag.as_deref().unwrap_or("null"),
                    self.config.account_id
                ),
            )
        };
        if let Some(d) = &id.image_digest {
            Digest::parse(d).map_err(|e| ("InvalidImageDigest", e))?;
        }
        if let Some(t) = &id.image_tag {
            check_tag(t).map_err(|e| ("InvalidImageTag", e))?;
        }
        let hit = images.iter().find(|(image, tags)| {
            id.image_digest.as_ref().is_none_or(|d| *d == image.digest)
                && id.image_tag.as_ref().is_none_or(|t| tags.contains(t))
        });
        match (hit, &id.image_digest, &id.image_tag) {
            (_, None, None) => Err((
                "MissingDigestAndTag",
                Error::Invalid("an image identifier needs an imageDigest or an imageTag".into()),
            )),
            (Some((i, t)), _, _) => Ok((i, t.as_slice())),
            (None, Some(_), Some(t)) if images.iter().any(|(_, tags)| tags.contains(t)) => Err((
                "ImageTagDoesNotMatchDigest",
                Error::Invalid(format!(
                    "ImageTagDoesNotMatchDigest: tag '{t}' points at another digest"
                )),
            )),
            (None, _, _) => Err(("ImageNotFound", not_found())),
        }
    }

    fn lifecycle_reply(
        &self,
        name: &str,
        rec: &RepoRecord,
    ) -> Result<Result<Vec<u8>, EcsError>, Error> {
        let Some(text) = &rec.lifecycle_policy else {
            return Err(Error::ecr(
                ErrorKind::LifecyclePolicyNotFound,
                format!(
                    "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        };
        Ok(json(ecr::GetLifecyclePolicyResponse {
            registry_id: Some(self.config.account_id.clone()),
            repository_name: Some(name.to_string()),
            lifecycle_policy_text: Some(text.clone()),
            last_evaluated_at: rec.lifecycle_updated_at,
        }))
    }

    fn policy_of(&self, name: &str, rec: &RepoRecord) -> Result<String, Error> {
        rec.policy.clone().ok_or_else(|| {
            Error::ecr(
                ErrorKind::RepositoryPolicyNotFound,
                format!(
                    "Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'",
                    self.config.account_id
                ),
            )
        })
    }

    fn name_of_arn(&self, arn: &str) -> Result<String, Error> {
        let prefix = format!(
            "arn:aws:ecr:{}:{}:repository/",
            self.config.region, self.config.account_id
        );
        arn.strip_prefix(&prefix)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "'{arn}' is not the ARN of a repository of this registry"
                ))
            })
    }
}

/// A repository's scanning configuration as ECR reports it: scan on push when the repository
/// asks for it or a SCAN_ON_PUSH rule of the registry matches it, with the filters that
/// matched (Berth keeps these; it has no scanner).
fn repository_scanning(
    rec: &RepoRecord,
    registry: &ecr::RegistryScanningConfiguration,
) -> ecr::RepositoryScanningConfiguration {
    let name = rec.repository.repository_name.clone().unwrap_or_default();
    let mut filters = Vec::new();
    let mut frequency = "MANUAL".to_string();
    for rule in registry.rules.iter().flatten() {
        let matched: Vec<ecr::ScanningRepositoryFilter> = rule
            .repository_filters
            .iter()
            .flatten()
            .filter(|f| crate::lifecycle::wildcard(f.filter.as_deref().unwrap_or_default(), &name))
            .cloned()
            .collect();
        if !matched.is_empty() {
            if let Some(f) = &rule.scan_frequency {
                frequency = f.clone();
            }
            filters.extend(matched);
        }
    }
    let on_push = rec
        .repository
        .image_scanning_configuration
        .as_ref()
        .and_then(|c| c.scan_on_push)
        .unwrap_or(false)
        || frequency == "SCAN_ON_PUSH";
    ecr::RepositoryScanningConfiguration {
        repository_arn: rec.repository.repository_arn.clone(),
        repository_name: Some(name),
        scan_on_push: Some(on_push),
        scan_frequency: Some(frequency),
        applied_scan_filters: Some(filters),
    }
}

fn check_length(what: &str, s: &str, min: usize, max: usize) -> Result<(), Error> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Error::Invalid(format!(
            "{what} is {n} characters; it must be {min} to {max}"
        )));
    }
    Ok(())
}

fn failure(id: &ecr::ImageIdentifier, code: &str, reason: &str) -> ecr::ImageFailure {
    ecr::ImageFailure {
        image_id: Some(id.clone()),
        failure_code: Some(code.into()),
        failure_reason: Some(reason.into()),
    }
}

fn failure_for(id: &ecr::ImageIdentifier, (code, e): &(&str, Error)) -> ecr::ImageFailure {
    let reason = match *code {
        "ImageNotFound" => "Requested image not found".to_string(),
        _ => e.to_string(),
    };
    failure(id, code, &reason)
}

/// A page of `items` after the one whose key is `token`.
pub(crate) fn page_of<T>(
    items: Vec<T>,
    token: Option<&str>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), Error> {
    let start = match token {
        Some(t) => items
            .iter()
            .position(|i| key(i) == t)
            .map(|p| p + 1)
            .ok_or_else(|| Error::Invalid(format!("nextToken '{t}' is not valid")))?,
        None => 0,
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    let page: Vec<T> = rest.into_iter().take(limit).collect();
    let next = if more { page.last().map(&key) } else { None };
    Ok((page, next))
}
