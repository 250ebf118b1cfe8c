//! What ECR keeps for the registry as a whole and the previews it computes: the registry
//! policy, the registry's scanning configuration, and lifecycle policy previews (the images a
//! policy would expire now, evaluated by the same pure [`lifecycle::evaluate`] that expires
//! them, and kept on the repository until the next preview).
//!
//! Berth has no image scanner: the scanning configuration is kept and reported, and asking for
//! an image's findings says that no scan exists. The registry policy is kept and reported;
//! like repository policies it is not enforced (every key the server knows may push and
//! pull).

use crate::images::decode;
use crate::lifecycle::{self, ImageInfo};
use crate::{now_epoch, Error, Registry};
use berth_api::ecr;
use berth_api::ErrorKind;
use berth_store::Txn;
use serde::{Deserialize, Serialize};

/// `ecr/registry/policy` → the registry policy's text.
const POLICY_KEY: &str = "ecr/registry/policy";
/// `ecr/registry/scanning` → `ecr::RegistryScanningConfiguration`.
const SCANNING_KEY: &str = "ecr/registry/scanning";

/// A lifecycle policy preview, kept on its repository's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub policy: String,
    pub results: Vec<PreviewResult>,
}

/// One image the previewed policy would expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewResult {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: f64,
    pub rule_priority: i64,
}

impl Registry {
    /// The images `policy_text` (else the repository's own lifecycle policy) would expire now,
    /// kept as the repository's preview.
    pub async fn start_lifecycle_preview(
        &self,
        name: &str,
        policy_text: Option<String>,
    ) -> Result<ecr::StartLifecyclePolicyPreviewResponse, Error> {
        let (rec, _) = self.repository(name).await?;
        let text = match policy_text.or(rec.lifecycle_policy) {
            Some(t) => t,
            None => {
                return Err(Error::ecr(
                    ErrorKind::LifecyclePolicyNotFound,
                    format!(
                        "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
                        self.config.account_id
                    ),
                ))
            }
        };
        let chars = text.chars().count();
        if !(100..=30720).contains(&chars) {
            return Err(Error::Invalid(format!(
                "lifecyclePolicyText is {chars} characters; it must be 100 to 30720"
            )));
        }
        let policy = lifecycle::parse(&text)?;
        let images = self.images(name).await?;
        let infos: Vec<ImageInfo> = images
            .iter()
            .map(|(i, tags)| ImageInfo {
                digest: i.digest.clone(),
                tags: tags.clone(),
                pushed_at: i.pushed_at,
            })
            .collect();
        let results = lifecycle::evaluate(&policy, &infos, now_epoch())
            .into_iter()
            .filter_map(|(digest, rule_priority)| {
                let info = infos.iter().find(|i| i.digest == digest)?;
                Some(PreviewResult {
                    digest,
                    tags: info.tags.clone(),
                    pushed_at: info.pushed_at,
                    rule_priority,
                })
            })
            .collect();
        let preview = Preview {
            policy: text.clone(),
            results,
        };
        self.update_repository(name, move |r| {
            r.lifecycle_preview = Some(preview.clone());
            Ok(())
        })
        .await?;
        Ok(ecr::StartLifecyclePolicyPreviewResponse {
            registry_id: Some(self.config.account_id.clone()),
            repository_name: Some(name.to_string()),
            lifecycle_policy_text: Some(text),
            // Evaluated at once: the preview is complete when this answers.
            status: Some("COMPLETE".into()),
        })
    }

    /// The repository's last preview, filtered and a page at a time.
    pub async fn lifecycle_preview(
        &self,
        name: &str,
        r: &ecr::GetLifecyclePolicyPreviewRequest,
    ) -> Result<ecr::GetLifecyclePolicyPreviewResponse, Error> {
        let (rec, _) = self.repository(name).await?;
        let Some(preview) = rec.lifecycle_preview else {
            return Err(Error::ecr(
                ErrorKind::LifecyclePolicyPreviewNotFound,
                format!(
                    "There is no lifecycle policy preview for the repository with name '{name}' in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        };
        let limit = match r.max_results {
            None => 100,
            Some(n) if (1..=100).contains(&n) => n as usize,
            Some(n) => {
                return Err(Error::Invalid(format!(
                    "maxResults {n} must be between 1 and 100"
                )))
            }
        };
        let tag_status = r
            .filter
            .as_ref()
            .and_then(|f| f.tag_status.clone())
            .unwrap_or_else(|| "ANY".into());
        berth_api::error::check_enum("tagStatus", &tag_status, &["TAGGED", "UNTAGGED", "ANY"])
            .map_err(Error::Ecr)?;
        let ids = r.image_ids.clone().unwrap_or_default();
        let total = preview.results.len() as i32;
        let chosen: Vec<&PreviewResult> = preview
            .results
            .iter()
            .filter(|p| match tag_status.as_str() {
                "TAGGED" => !p.tags.is_empty(),
                "UNTAGGED" => p.tags.is_empty(),
                _ => true,
            })
            .filter(|p| {
                ids.is_empty()
                    || ids.iter().any(|id| {
                        id.image_digest.as_ref().is_none_or(|d| *d == p.digest)
                            && id.image_tag.as_ref().is_none_or(|t| p.tags.contains(t))
                    })
            })
            .collect();
        let (page, next) =
            crate::ecr::page_of(chosen, r.next_token.as_deref(), limit, |p| p.digest.clone())?;
        Ok(ecr::GetLifecyclePolicyPreviewResponse {
            registry_id: Some(self.config.account_id.clone()),
            repository_name: Some(name.to_string()),
            lifecycle_policy_text: Some(preview.policy.clone()),
            status: Some("COMPLETE".into()),
            next_token: next,
            preview_results: Some(
                page.into_iter()
                    .map(|p| ecr::LifecyclePolicyPreviewResult {
                        image_digest: Some(p.digest.clone()),
                        image_tags: Some(p.tags.clone()),
                        image_pushed_at: Some(p.pushed_at),
                        applied_rule_priority: Some(p.rule_priority as i32),
                        action: Some(ecr::LifecyclePolicyRuleAction {
                            r#type: Some("EXPIRE".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            summary: Some(ecr::LifecyclePolicyPreviewSummary {
                expiring_image_total_count: Some(total),
                ..Default::default()
            }),
        })
    }

    pub async fn put_registry_policy(&self, text: &str) -> Result<(), Error> {
        let chars = text.chars().count();
        if chars > 10240 {
            return Err(Error::Invalid(format!(
                "policyText is {chars} characters; it must be at most 10240"
            )));
        }
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::Invalid(format!("Invalid registry policy provided: not JSON: {e}"))
        })?;
        if doc.get("Statement").is_none() {
            return Err(Error::Invalid(
                "Invalid registry policy provided: it has no 'Statement'".into(),
            ));
        }
        self.store
            .txn(Txn::new().put(POLICY_KEY, text.as_bytes().to_vec()))
            .await?;
        Ok(())
    }

    /// The registry policy, or ECR's RegistryPolicyNotFoundException.
    pub async fn registry_policy(&self) -> Result<String, Error> {
        match self.store.get(POLICY_KEY).await? {
            Some(kv) => Ok(String::from_utf8_lossy(&kv.value).into_owned()),
            None => Err(Error::ecr(
                ErrorKind::RegistryPolicyNotFound,
                format!(
                    "Registry policy does not exist in the registry with id '{}'",
                    self.config.account_id
                ),
            )),
        }
    }

    /// Deletes the registry policy; the text it had.
    pub async fn delete_registry_policy(&self) -> Result<String, Error> {
        let text = self.registry_policy().await?;
        self.store.txn(Txn::new().delete(POLICY_KEY)).await?;
        Ok(text)
    }

    /// The registry's scanning configuration: BASIC with no rules until one is put.
    pub async fn scanning_configuration(
        &self,
    ) -> Result<ecr::RegistryScanningConfiguration, Error> {
        match self.store.get(SCANNING_KEY).await? {
            Some(kv) => decode(&kv),
            None => Ok(ecr::RegistryScanningConfiguration {
                scan_type: Some("BASIC".into()),
                rules: Some(Vec::new()),
            }),
        }
    }

    pub async fn put_scanning_configuration(
        &self,
        scan_type: Option<String>,
        rules: Option<Vec<ecr::RegistryScanningRule>>,
    ) -> Result<ecr::RegistryScanningConfiguration, Error> {
        let scan_type = scan_type.unwrap_or_else(|| "BASIC".into());
        berth_api::error::check_enum("scanType", &scan_type, ecr::enums::SCAN_TYPE)
            .map_err(Error::Ecr)?;
        if scan_type == "ENHANCED" {
            return Err(Error::Invalid(
                "scanType ENHANCED needs Amazon Inspector, which Berth does not have; use BASIC"
                    .into(),
            ));
        }
        let rules = rules.unwrap_or_default();
        if rules.len() > 2 {
            return Err(Error::Invalid(format!(
                "rules has {} rules; a registry takes at most 2",
                rules.len()
            )));
        }
        for (i, rule) in rules.iter().enumerate() {
            let frequency = rule.scan_frequency.as_deref().unwrap_or_default();
            berth_api::error::check_enum(
                &format!("rules[{i}].scanFrequency"),
                frequency,
                ecr::enums::SCAN_FREQUENCY,
            )
            .map_err(Error::Ecr)?;
            if frequency == "CONTINUOUS_SCAN" {
                return Err(Error::Invalid(format!(
                    "rules[{i}].scanFrequency CONTINUOUS_SCAN is for ENHANCED scanning; BASIC takes SCAN_ON_PUSH or MANUAL"
                )));
            }
            let filters = rule.repository_filters.as_deref().unwrap_or_default();
            if filters.is_empty() || filters.len() > 100 {
                return Err(Error::Invalid(format!(
                    "rules[{i}].repositoryFilters must have 1 to 100 filters, not {}",
                    filters.len()
                )));
            }
            for (j, f) in filters.iter().enumerate() {
                let kind = f.filter_type.as_deref().unwrap_or_default();
                if kind != "WILDCARD" {
                    return Err(Error::Invalid(format!(
                        "rules[{i}].repositoryFilters[{j}].filterType must be WILDCARD, not '{kind}'"
                    )));
                }
                let filter = f.filter.as_deref().unwrap_or_default();
                if filter.is_empty() || filter.len() > 255 {
                    return Err(Error::Invalid(format!(
                        "rules[{i}].repositoryFilters[{j}].filter must be 1 to 255 characters"
                    )));
                }
            }
        }
        let config = ecr::RegistryScanningConfiguration {
            scan_type: Some(scan_type),
            rules: Some(rules),
        };
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::Internal(format!("encoding the scanning configuration: {e}")))?;
        self.store.txn(Txn::new().put(SCANNING_KEY, bytes)).await?;
        Ok(config)
    }

    /// An image's scan findings: the image must exist, and no scan ever does.
    pub async fn scan_findings(
        &self,
        name: &str,
        id: &ecr::ImageIdentifier,
    ) -> Result<ecr::DescribeImageScanFindingsResponse, Error> {
        let images = self.images(name).await?;
        let (image, _) = self.find(name, &images, id).map_err(|(_, e)| e)?;
        Err(Error::ecr(
            ErrorKind::ScanNotFound,
            format!(
                "Image scan does not exist for the image with '{{imageDigest:'{}', imageTag:'{}'}}' in the repository with name '{name}' in the registry with id '{}'",
                image.digest,
                id.image_tag.as_deref().unwrap_or("null"),
                self.config.account_id
            ),
        ))
    }
}
