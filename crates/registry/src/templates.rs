//! ECR's repository creation templates: the settings of repositories the registry creates on
//! the user's behalf — by replication into this region (`REPLICATION`) and by a push to a
//! repository that does not exist (`CREATE_ON_PUSH`). The template whose prefix is the longest
//! that the repository's name starts with (`prefix/`) applies, else the `ROOT` one; with none,
//! nothing is created on push, and replication creates the repository with ECR's defaults.
//! (`PULL_THROUGH_CACHE` templates are kept and validated, but pull-through caching never
//! creates a repository here: upstream registries are out of reach.)
//!
//! Records: `ecr/templates/PREFIX` → [`ecr::RepositoryCreationTemplate`].

use crate::images::{check_tags, decode, encode};
use crate::{lifecycle, now_epoch, Error, Registry};
use berth_api::ecr;
use berth_api::ErrorKind;
use berth_store::Txn;

const PREFIX: &str = "ecr/templates/";
/// The prefix that matches every repository no other template takes.
pub const ROOT: &str = "ROOT";
const APPLIED_FOR: &[&str] = &["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"];

/// A template's key: `prod` and `prod/` are one prefix.
fn key(prefix: &str) -> String {
    format!("{PREFIX}{}", prefix.trim_end_matches('/'))
}

fn check_prefix(p: &str) -> Result<(), Error> {
    if p == ROOT {
        return Ok(());
    }
    // ECR's pattern: components of lowercase letters and digits joined by `.`, `_`, `__` or
    // runs of `-`, separated by `/`, with an optional trailing `/`.
    let component = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter()
                .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            && c.split(|x: char| x.is_ascii_lowercase() || x.is_ascii_digit())
                .filter(|sep| !sep.is_empty())
                .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-'))
    };
    let bare = p.strip_suffix('/').unwrap_or(p);
    if p.len() > 256 || !bare.split('/').all(component) {
        return Err(Error::Invalid(format!(
            "Invalid parameter at 'prefix' failed to satisfy constraint: 'must be ROOT or a repository namespace such as prod or prod/team' (got '{p}')"
        )));
    }
    Ok(())
}

/// The settings a template may carry, checked as CreateRepository and the policy operations
/// check them.
fn check_settings(t: &ecr::RepositoryCreationTemplate) -> Result<(), Error> {
    let applied = t.applied_for.clone().unwrap_or_default();
    if applied.is_empty() {
        return Err(Error::Invalid(
            "appliedFor must name at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH"
                .into(),
        ));
    }
    for a in &applied {
        berth_api::error::check_enum("appliedFor", a, APPLIED_FOR).map_err(Error::Ecr)?;
    }
    if let Some(m) = &t.image_tag_mutability {
        berth_api::error::check_enum("imageTagMutability", m, &["MUTABLE", "IMMUTABLE"])
            .map_err(Error::Ecr)?;
    }
    if t.image_tag_mutability_exclusion_filters
        .as_ref()
        .is_some_and(|f| !f.is_empty())
    {
        return Err(Error::Invalid(
            "imageTagMutabilityExclusionFilters are not supported by this registry".into(),
        ));
    }
    if let Some(e) = &t.encryption_configuration {
        let kind = e.encryption_type.clone().unwrap_or_default();
        berth_api::error::check_enum("encryptionType", &kind, &["AES256", "KMS", "KMS_DSSE"])
            .map_err(Error::Ecr)?;
        if kind == "AES256" && e.kms_key.is_some() {
            return Err(Error::Invalid(
                "kmsKey can only be given with encryptionType KMS or KMS_DSSE".into(),
            ));
        }
    }
    if let Some(text) = t.lifecycle_policy.as_deref().filter(|t| !t.is_empty()) {
        lifecycle::parse(text)?;
    }
    if let Some(text) = t.repository_policy.as_deref().filter(|t| !t.is_empty()) {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::Invalid(format!("Invalid repository policy provided: not JSON: {e}"))
        })?;
        if doc.get("Statement").is_none() {
            return Err(Error::Invalid(
                "Invalid repository policy provided: it has no 'Statement'".into(),
            ));
        }
    }
    if t.description.as_deref().is_some_and(|d| d.len() > 256) {
        return Err(Error::Invalid(
            "description must be at most 256 characters".into(),
        ));
    }
    check_tags(t.resource_tags.as_deref().unwrap_or_default())?;
    Ok(())
}

impl Registry {
    fn template_not_found(&self, prefix: &str) -> Error {
        Error::ecr(
            ErrorKind::TemplateNotFound,
            format!(
                "The repository creation template with prefix '{prefix}' does not exist in the registry with id '{}'",
                self.config.account_id
            ),
        )
    }

    async fn templates(&self) -> Result<Vec<ecr::RepositoryCreationTemplate>, Error> {
        self.store
            .range(PREFIX, None, None)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    pub async fn create_template(
        &self,
        mut t: ecr::RepositoryCreationTemplate,
    ) -> Result<ecr::RepositoryCreationTemplate, Error> {
        let prefix = t.prefix.clone().unwrap_or_default();
        check_prefix(&prefix)?;
        check_settings(&t)?;
        let now = now_epoch();
        t.created_at = Some(now);
        t.updated_at = Some(now);
        let k = key(&prefix);
        let txn = Txn::new().unchanged(&k, None).put(k.clone(), encode(&t)?);
        if !self.commit(txn).await? {
            return Err(Error::ecr(
                ErrorKind::TemplateAlreadyExists,
                format!(
                    "The repository creation template with prefix '{prefix}' already exists in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        }
        Ok(t)
    }

    /// UpdateRepositoryCreationTemplate: the members given replace the template's.
    pub async fn update_template(
        &self,
        change: ecr::RepositoryCreationTemplate,
    ) -> Result<ecr::RepositoryCreationTemplate, Error> {
        let prefix = change.prefix.clone().unwrap_or_default();
        check_prefix(&prefix)?;
        let k = key(&prefix);
        for _ in 0..crate::images::CAS_ATTEMPTS {
            let Some(kv) = self.store.get(&k).await? else {
                return Err(self.template_not_found(&prefix));
            };
            let mut t: ecr::RepositoryCreationTemplate = decode(&kv)?;
            macro_rules! take {
                ($($m:ident),*) => { $( if change.$m.is_some() { t.$m = change.$m.clone(); } )* };
            }
            take!(
                applied_for,
                custom_role_arn,
                description,
                encryption_configuration,
                image_tag_mutability,
                image_tag_mutability_exclusion_filters,
                lifecycle_policy,
                repository_policy,
                resource_tags
            );
            check_settings(&t)?;
            t.updated_at = Some(now_epoch());
            if self.commit(Txn::new().replace(&kv, encode(&t)?)).await? {
                return Ok(t);
            }
        }
        Err(Error::Internal(format!(
            "updating the template '{prefix}' kept conflicting"
        )))
    }

    pub async fn delete_template(
        &self,
        prefix: &str,
    ) -> Result<ecr::RepositoryCreationTemplate, Error> {
        check_prefix(prefix)?;
        let k = key(prefix);
        let Some(kv) = self.store.get(&k).await? else {
            return Err(self.template_not_found(prefix));
        };
        let t = decode(&kv)?;
        if !self
            .commit(Txn::new().unchanged(&k, Some(&kv)).delete(k.clone()))
            .await?
        {
            return Err(self.template_not_found(prefix));
        }
        Ok(t)
    }

    /// DescribeRepositoryCreationTemplates: the named ones (each must exist), or all.
    pub async fn describe_templates(
        &self,
        prefixes: Option<Vec<String>>,
    ) -> Result<Vec<ecr::RepositoryCreationTemplate>, Error> {
        match prefixes.filter(|p| !p.is_empty()) {
            None => self.templates().await,
            Some(list) => {
                let mut out = Vec::new();
                for p in list {
                    check_prefix(&p)?;
                    match self.store.get(&key(&p)).await? {
                        Some(kv) => out.push(decode(&kv)?),
                        None => return Err(self.template_not_found(&p)),
                    }
                }
                Ok(out)
            }
        }
    }

    /// The template that applies to repository `name` created for `purpose`: the longest
    /// matching prefix among those applied for it, else `ROOT`'s if it is.
    pub async fn template_for(
        &self,
        name: &str,
        purpose: &str,
    ) -> Result<Option<ecr::RepositoryCreationTemplate>, Error> {
        let mut best: Option<(usize, ecr::RepositoryCreationTemplate)> = None;
        for t in self.templates().await? {
            let applies = t
                .applied_for
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|a| a == purpose);
            let prefix = t.prefix.clone().unwrap_or_default();
            let len = if prefix == ROOT {
                0
            } else {
                let bare = prefix.trim_end_matches('/');
                if !name.starts_with(&format!("{bare}/")) {
                    continue;
                }
                bare.len()
            };
            if applies && best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, t));
            }
        }
        Ok(best.map(|(_, t)| t))
    }

    /// Creates repository `name` with a template's settings: mutability, encryption, tags,
    /// lifecycle policy and repository policy.
    pub async fn create_from_template(
        &self,
        name: &str,
        t: Option<&ecr::RepositoryCreationTemplate>,
    ) -> Result<ecr::Repository, Error> {
        let Some(t) = t else {
            return self
                .create_repository(name, None, None, None, Vec::new())
                .await;
        };
        let repo = self
            .create_repository(
                name,
                t.image_tag_mutability.clone(),
                t.encryption_configuration
                    .as_ref()
                    .map(|e| ecr::EncryptionConfiguration {
                        encryption_type: e.encryption_type.clone(),
                        kms_key: e.kms_key.clone(),
                    }),
                None,
                t.resource_tags.clone().unwrap_or_default(),
            )
            .await?;
        let lifecycle = t.lifecycle_policy.clone().filter(|p| !p.is_empty());
        let policy = t.repository_policy.clone().filter(|p| !p.is_empty());
        if lifecycle.is_some() || policy.is_some() {
            self.update_repository(name, move |rec| {
                if let Some(l) = &lifecycle {
                    rec.lifecycle_policy = Some(l.clone());
                    rec.lifecycle_updated_at = Some(now_epoch());
                }
                if let Some(p) = &policy {
                    rec.policy = Some(p.clone());
                }
                Ok(())
            })
            .await?;
        }
        Ok(repo)
    }

    /// A push into `name`: if the repository is missing and a `CREATE_ON_PUSH` template
    /// applies, it is created now; otherwise nothing changes (and the push finds no
    /// repository, as without templates).
    pub async fn create_on_push(&self, name: &str) -> Result<(), Error> {
        match self.repository(name).await {
            Ok(_) => Ok(()),
            Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryNotFound => {
                let Some(t) = self.template_for(name, "CREATE_ON_PUSH").await? else {
                    return Ok(());
                };
                match self.create_from_template(name, Some(&t)).await {
                    Ok(_) => Ok(()),
                    Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryAlreadyExists => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_ecrs_pattern() {
        for ok in [
            "ROOT",
            "x",
            "prod",
            "prod/",
            "prod/team",
            "a.b",
            "a__b",
            "a---b",
            "9",
        ] {
            assert!(check_prefix(ok).is_ok(), "{ok} is a valid prefix");
        }
        for bad in [
            "", "/", "Bad", "a//b", "-a", "a-", "a___b", "a._b", "a b", "a/-b",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} is not a valid prefix");
        }
    }
}
