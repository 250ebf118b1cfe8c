//! ECS's long-format ARNs: `arn:aws:ecs:REGION:ACCOUNT:KIND/ID`.

use crate::Invalid;
use std::fmt;

/// The resource kinds Berth names with ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cluster,
    TaskDefinition,
    Service,
    Task,
    ContainerInstance,
    CapacityProvider,
    ServiceDeployment,
    ServiceRevision,
    TaskSet,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::TaskDefinition => "task-definition",
            ResourceKind::Service => "service",
            ResourceKind::Task => "task",
            ResourceKind::ContainerInstance => "container-instance",
            ResourceKind::CapacityProvider => "capacity-provider",
            ResourceKind::ServiceDeployment => "service-deployment",
            ResourceKind::ServiceRevision => "service-revision",
            ResourceKind::TaskSet => "task-set",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cluster" => ResourceKind::Cluster,
            "task-definition" => ResourceKind::TaskDefinition,
            "service" => ResourceKind::Service,
            "task" => ResourceKind::Task,
            "container-instance" => ResourceKind::ContainerInstance,
            "capacity-provider" => ResourceKind::CapacityProvider,
            "service-deployment" => ResourceKind::ServiceDeployment,
            "service-revision" => ResourceKind::ServiceRevision,
            "task-set" => ResourceKind::TaskSet,
            _ => return None,
        })
    }
}

/// A parsed ECS ARN. `id` is everything after `KIND/` (`web:3`, `prod/abc123`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceKind,
    pub id: String,
}

impl Arn {
    pub fn new(region: &str, account: &str, kind: ResourceKind, id: impl Into<String>) -> Self {
        Arn {
            region: region.into(),
            account: account.into(),
            kind,
            id: id.into(),
        }
    }

    /// Parses an ECS ARN; the error names the offending value.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::parameter(format!(
                "The ARN provided is invalid. ('{s}' is not a valid ECS ARN)"
            ))
        };
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let (kind, id) = rest.split_once('/').ok_or_else(bad)?;
        let kind = ResourceKind::parse(kind).ok_or_else(bad)?;
        if id.is_empty() || region.is_empty() || account.is_empty() {
            return Err(bad());
        }
        Ok(Arn::new(region, account, kind, id))
    }

    pub fn looks_like_arn(s: &str) -> bool {
        s.starts_with("arn:")
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:ecs:{}:{}:{}/{}",
            self.region,
            self.account,
            self.kind.as_str(),
            self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let a = Arn::new(
            "us-east-1",
            "000000000000",
            ResourceKind::TaskDefinition,
            "web:3",
        );
        let s = a.to_string();
        assert_eq!(
            s,
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"
        );
        assert_eq!(Arn::parse(&s).unwrap(), a);
        let c = Arn::parse("arn:aws:ecs:eu-west-1:123:cluster/prod").unwrap();
        assert_eq!((c.kind, c.id.as_str()), (ResourceKind::Cluster, "prod"));
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:ecs:r:a:cluster",
            "arn:aws:ecs:r:a:widget/x",
            "arn:aws:ecs::a:cluster/x",
        ] {
            assert!(Arn::parse(s).is_err(), "{s}");
        }
    }
}
