//! Pull-through cache rules: a repository prefix (`docker-hub`) that stands for an upstream
//! registry (`registry-1.docker.io`). The rules are kept and validated as ECR validates them;
//! upstream registries are out of reach of a Berth server, so a pull through a rule (of a
//! repository under its prefix that is not here) says so plainly instead of "not found", and
//! ValidatePullThroughCacheRule answers that the rule cannot work here.

use crate::images::decode;
use crate::{now_epoch, Error, Registry};
use berth_api::ecr;
use berth_api::ErrorKind;
use berth_store::Txn;

/// `ecr/pull-through/PREFIX` → `ecr::PullThroughCacheRule`.
const PREFIX: &str = "ecr/pull-through/";
/// ECR's quota of rules per registry.
pub const MAX_RULES: usize = 50;

/// A rule's key: `quay` and `quay/` are one prefix.
fn key(prefix: &str) -> String {
    format!("{PREFIX}{}", prefix.trim_end_matches('/'))
}

/// The upstream registry a URL is, by ECR's list; `None` for one ECR does not support.
pub fn upstream_of(url: &str) -> Option<&'static str> {
    let host = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    Some(match host {
        "registry-1.docker.io" => "docker-hub",
        "public.ecr.aws" => "ecr-public",
        "quay.io" => "quay",
        "registry.k8s.io" => "k8s",
        "ghcr.io" => "github-container-registry",
        "registry.gitlab.com" => "gitlab-container-registry",
        "cgr.dev" => "chainguard",
        h if h.ends_with(".azurecr.io") && h.len() > ".azurecr.io".len() => {
            "azure-container-registry"
        }
        h if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => "ecr",
        _ => return None,
    })
}

/// Whether an upstream needs credentials (a Secrets Manager secret) for its rule.
fn needs_credentials(upstream: &str) -> bool {
    matches!(
        upstream,
        "docker-hub"
            | "github-container-registry"
            | "azure-container-registry"
            | "gitlab-container-registry"
    )
}

/// ECR's pattern for a rule's repository prefix (or `ROOT`).
fn check_prefix(what: &str, p: &str) -> Result<(), Error> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.split(['.', '_', '-']).all(|part| {
                part.is_empty()
                    || part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let body = p.strip_suffix('/').unwrap_or(p);
    let ok = p == "ROOT"
        || ((2..=30).contains(&p.len()) && !body.is_empty() && body.split('/').all(segment_ok));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} '{p}' is invalid: 2 to 30 lowercase letters, digits and separators (. _ -), segments joined by '/', or ROOT"
        )))
    }
}

fn check_credential(arn: &str) -> Result<(), Error> {
    let ok = (50..=612).contains(&arn.len())
        && arn.starts_with("arn:aws")
        && arn.contains(":secretsmanager:")
        && arn.contains(":secret:ecr-pullthroughcache/");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "credentialArn '{arn}' is not the ARN of a Secrets Manager secret named ecr-pullthroughcache/…"
        )))
    }
}

impl Registry {
    fn rule_not_found(&self, prefix: &str) -> Error {
        Error::ecr(
            ErrorKind::PullThroughCacheRuleNotFound,
            format!(
                "The pull through cache rule with ecrRepositoryPrefix '{prefix}' does not exist in the registry with id '{}'",
                self.config.account_id
            ),
        )
    }

    async fn rules(&self) -> Result<Vec<ecr::PullThroughCacheRule>, Error> {
        self.store
            .range(PREFIX, None, None)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn rule(
        &self,
        prefix: &str,
    ) -> Result<(ecr::PullThroughCacheRule, berth_store::KeyValue), Error> {
        check_prefix("ecrRepositoryPrefix", prefix)?;
        match self.store.get(&key(prefix)).await? {
            Some(kv) => Ok((decode(&kv)?, kv)),
            None => Err(self.rule_not_found(prefix)),
        }
    }

    pub async fn create_pull_through_rule(
        &self,
        r: ecr::CreatePullThroughCacheRuleRequest,
    ) -> Result<ecr::PullThroughCacheRule, Error> {
        let prefix = r
            .ecr_repository_prefix
            .ok_or_else(|| Error::Invalid("ecrRepositoryPrefix must be given".into()))?;
        check_prefix("ecrRepositoryPrefix", &prefix)?;
        if let Some(p) = &r.upstream_repository_prefix {
            check_prefix("upstreamRepositoryPrefix", p)?;
        }
        let url = r
            .upstream_registry_url
            .ok_or_else(|| Error::Invalid("upstreamRegistryUrl must be given".into()))?;
        let Some(upstream) = upstream_of(&url) else {
            return Err(Error::ecr(
                ErrorKind::UnsupportedUpstreamRegistry,
                format!("The specified upstream registry '{url}' is not supported"),
            ));
        };
        if let Some(given) = &r.upstream_registry {
            if given != upstream {
                return Err(Error::Invalid(format!(
                    "upstreamRegistry '{given}' does not match upstreamRegistryUrl '{url}' ({upstream})"
                )));
            }
        }
        if let Some(c) = &r.credential_arn {
            check_credential(c)?;
        } else if needs_credentials(upstream) {
            return Err(Error::Invalid(format!(
                "a pull through cache rule for {upstream} needs a credentialArn"
            )));
        }
        let key = key(&prefix);
        if self.store.get(&key).await?.is_some() {
            return Err(Error::ecr(
                ErrorKind::PullThroughCacheRuleAlreadyExists,
                format!(
                    "A pull through cache rule with ecrRepositoryPrefix '{prefix}' already exists in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        }
        if self.rules().await?.len() >= MAX_RULES {
            return Err(Error::ecr(
                ErrorKind::LimitExceeded,
                format!("A registry holds at most {MAX_RULES} pull through cache rules"),
            ));
        }
        let rule = ecr::PullThroughCacheRule {
            ecr_repository_prefix: Some(prefix),
            upstream_registry_url: Some(url),
            upstream_registry: Some(upstream.to_string()),
            upstream_repository_prefix: r.upstream_repository_prefix,
            credential_arn: r.credential_arn,
            custom_role_arn: r.custom_role_arn,
            registry_id: Some(self.config.account_id.clone()),
            created_at: Some(now_epoch()),
            updated_at: None,
        };
        let bytes = serde_json::to_vec(&rule)
            .map_err(|e| Error::Internal(format!("encoding a rule: {e}")))?;
        let txn = Txn::new().unchanged(&key, None).put(key.clone(), bytes);
        if !self.commit(txn).await? {
            return Err(Error::ecr(
                ErrorKind::PullThroughCacheRuleAlreadyExists,
                "A pull through cache rule with this ecrRepositoryPrefix was created meanwhile",
            ));
        }
        Ok(rule)
    }

    pub async fn describe_pull_through_rules(
        &self,
        prefixes: Option<Vec<String>>,
    ) -> Result<Vec<ecr::PullThroughCacheRule>, Error> {
        match prefixes {
            None => self.rules().await,
            Some(list) => {
                let mut out = Vec::new();
                for p in list {
                    out.push(self.rule(&p).await?.0);
                }
                Ok(out)
            }
        }
    }

    pub async fn update_pull_through_rule(
        &self,
        prefix: &str,
        credential_arn: Option<String>,
        custom_role_arn: Option<String>,
    ) -> Result<ecr::PullThroughCacheRule, Error> {
        let (mut rule, kv) = self.rule(prefix).await?;
        if let Some(c) = &credential_arn {
            check_credential(c)?;
            rule.credential_arn = credential_arn;
        }
        if custom_role_arn.is_some() {
            rule.custom_role_arn = custom_role_arn;
        }
        rule.updated_at = Some(now_epoch());
        let bytes = serde_json::to_vec(&rule)
            .map_err(|e| Error::Internal(format!("encoding a rule: {e}")))?;
        // Only over the rule as read: an update never brings back a rule deleted meanwhile.
        let txn = Txn::new().replace(&kv, bytes);
        if !self.commit(txn).await? {
            return Err(self.rule_not_found(prefix));
        }
        Ok(rule)
    }

    pub async fn delete_pull_through_rule(
        &self,
        prefix: &str,
    ) -> Result<ecr::PullThroughCacheRule, Error> {
        let (rule, kv) = self.rule(prefix).await?;
        let txn = Txn::new()
            .unchanged(&kv.key, Some(&kv))
            .delete(kv.key.clone());
        if !self.commit(txn).await? {
            return Err(self.rule_not_found(prefix));
        }
        Ok(rule)
    }

    /// The rule a repository name falls under (the longest prefix, then ROOT), if any.
    pub async fn pull_through_rule_for(
        &self,
        repository: &str,
    ) -> Result<Option<ecr::PullThroughCacheRule>, Error> {
        let rules = self.rules().await?;
        let under = |r: &&ecr::PullThroughCacheRule| {
            let p = r.ecr_repository_prefix.as_deref().unwrap_or_default();
            let p = p.trim_end_matches('/');
            p != "ROOT" && repository.starts_with(p) && repository[p.len()..].starts_with('/')
        };
        let best = rules
            .iter()
            .filter(under)
            .max_by_key(|r| r.ecr_repository_prefix.as_deref().map_or(0, str::len))
            .or_else(|| {
                rules
                    .iter()
                    .find(|r| r.ecr_repository_prefix.as_deref() == Some("ROOT"))
            });
        Ok(best.cloned())
    }

    /// What a pull of a repository that is not here says when a rule covers it.
    pub async fn unreachable_upstream(&self, repository: &str) -> Option<Error> {
        let rule = self.pull_through_rule_for(repository).await.ok()??;
        Some(Error::NameUnknown(format!(
            "repository '{repository}' is not cached here, and its pull through cache rule '{}' names the upstream registry {}, which this Berth server cannot reach",
            rule.ecr_repository_prefix.as_deref().unwrap_or_default(),
            rule.upstream_registry_url.as_deref().unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_known_by_their_urls() {
        assert_eq!(upstream_of("registry-1.docker.io"), Some("docker-hub"));
        assert_eq!(upstream_of("https://public.ecr.aws"), Some("ecr-public"));
        assert_eq!(
            upstream_of("myreg.azurecr.io"),
            Some("azure-container-registry")
        );
        assert_eq!(
            upstream_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("ecr")
        );
        assert_eq!(upstream_of("example.com"), None);
        assert_eq!(upstream_of(".azurecr.io"), None);
    }

    #[test]
    fn prefixes_follow_ecrs_pattern() {
        for ok in [
            "docker-hub",
            "ecr-public",
            "a1",
            "team/cache",
            "quay/",
            "ROOT",
        ] {
            assert!(check_prefix("p", ok).is_ok(), "{ok}");
        }
        for bad in ["a", "Docker", "-x", "x-", "a//b", "/ab", &"a".repeat(31)] {
            assert!(check_prefix("p", bad).is_err(), "{bad}");
        }
    }
}
