//! Berth's wire layer for the AWS JSON 1.1 protocol: the only crate that knows ECS's and ECR's
//! JSON.
//!
//! - [`ecs`]: every shape of the ECS operations Berth serves, generated from botocore's model,
//!   and [`ecs::EcsRequest`], one variant per operation. [`ecr`] is the same for ECR, [`logs`]
//!   for CloudWatch Logs.
//! - [`error`]: [`EcsError`], the exception names and HTTP statuses of both.
//! - [`sigv4`]: verification of AWS Signature Version 4 on incoming requests.
//! - [`convert`]: wire shapes to the domain model ([`berth_model`]) and back.

pub mod cbor;
pub mod cloudwatch;
pub mod convert;
pub mod ec2;
pub mod ecr;
pub mod ecs;
pub mod elbv2;
pub mod error;
pub mod logs;
pub mod query;
pub mod sigv4;

pub use error::{EcsError, ErrorKind};

/// The `X-Amz-Target` prefix of ECS operations.
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// The `X-Amz-Target` prefix of ECR operations.
pub const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
/// The `X-Amz-Target` prefix of CloudWatch Logs operations.
pub const LOGS_TARGET_PREFIX: &str = "Logs_20140328.";
/// CloudWatch's service name in Smithy RPC v2 paths
/// (`/service/GraniteServiceVersion20100801/operation/OP`) and, with a dot, its JSON 1.0
/// `X-Amz-Target` prefix.
pub const CLOUDWATCH_SERVICE: &str = "GraniteServiceVersion20100801";
/// The Smithy namespace of CloudWatch's error shapes.
pub const CLOUDWATCH_NAMESPACE: &str = "com.amazonaws.cloudwatch";
/// The content type of Smithy RPC v2 CBOR requests and responses.
pub const CBOR_CONTENT_TYPE: &str = "application/cbor";
/// The content type of JSON 1.0 requests and responses.
pub const JSON_1_0_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The content type of JSON 1.1 requests and responses.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A generated shape: knows its required members.
pub trait Shape {
    /// The path of the first required member that is missing, if any.
    fn check_required(&self, path: &str) -> Result<(), String>;
}

/// Why a request body could not become a typed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a member of the wrong type.
    #[error("{0}")]
    Serialization(String),
    /// A member the model requires is absent or null.
    #[error("member must not be null: {0}")]
    Missing(String),
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

/// Deserializes a request body, naming the member path of any type error. An empty body is `{}`.
fn from_body<T: serde::de::DeserializeOwned + Shape>(body: &[u8]) -> Result<T, ParseError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ParseError::Serialization(inner.to_string())
        } else {
            ParseError::Serialization(format!("{path}: {inner}"))
        }
    })?;
    value.check_required("").map_err(ParseError::Missing)?;
    Ok(value)
}

/// Parses the body of the ECS operation named by an `X-Amz-Target` header.
pub fn parse_ecs_request(target: Option<&str>, body: &[u8]) -> Result<ecs::EcsRequest, EcsError> {
    let Some(target) = target else {
        return Err(EcsError::new(
            ErrorKind::UnknownOperation,
            "the request has no X-Amz-Target header",
        ));
    };
    let Some(operation) = target.strip_prefix(ECS_TARGET_PREFIX) else {
        return Err(EcsError::new(
            ErrorKind::UnknownOperation,
            format!("unknown target '{target}'"),
        ));
    };
    parsed(
        "ECS",
        operation,
        ecs::EcsRequest::parse(operation, body),
        ecs::ALL_OPERATIONS,
    )
}

/// Parses the body of an ECR operation, named without its target prefix.
pub fn parse_ecr_request(operation: &str, body: &[u8]) -> Result<ecr::EcrRequest, EcsError> {
    parsed(
        "ECR",
        operation,
        ecr::EcrRequest::parse(operation, body),
        ecr::ALL_OPERATIONS,
    )
}

/// Parses the body of a CloudWatch Logs operation, named without its target prefix.
pub fn parse_logs_request(operation: &str, body: &[u8]) -> Result<logs::LogsRequest, EcsError> {
    parsed(
        "CloudWatch Logs",
        operation,
        logs::LogsRequest::parse(operation, body),
        logs::ALL_OPERATIONS,
    )
}

/// Parses the body of a CloudWatch operation: CBOR (Smithy RPC v2) when `cbor`, else JSON 1.0.
/// CloudWatch names a missing member MissingParameter, not InvalidParameter.
pub fn parse_cloudwatch_request(
    operation: &str,
    body: &[u8],
    cbor: bool,
) -> Result<cloudwatch::CloudWatchRequest, EcsError> {
    let json;
    let body = if cbor && !body.is_empty() {
        let value = cbor::decode(body)
            .map_err(|e| EcsError::new(ErrorKind::Serialization, e.to_string()))?;
        json = serde_json::to_vec(&value)
            .map_err(|e| EcsError::new(ErrorKind::Serialization, e.to_string()))?;
        &json[..]
    } else {
        body
    };
    match cloudwatch::CloudWatchRequest::parse(operation, body) {
        Err(ParseError::Missing(path)) => Err(EcsError::new(
            ErrorKind::MissingParameter,
            format!("The parameter {path} is required."),
        )),
        other => parsed("CloudWatch", operation, other, cloudwatch::ALL_OPERATIONS),
    }
}

/// A Query-protocol (form-encoded) request's `Action` and its members as the JSON its input
/// shape parses from, checked against the service's `Version`. `code` names the service's own
/// error code for a malformed request (ELB's ValidationError, EC2's InvalidParameterValue).
fn parse_query(
    body: &[u8],
    model: &serde_json::Value,
    version: &str,
    malformed: ErrorKind,
) -> Result<(String, Vec<u8>), EcsError> {
    let params = query::decode_form(body).map_err(|e| EcsError::new(malformed, e.to_string()))?;
    let mut action = None;
    let mut rest = Vec::with_capacity(params.len());
    for (k, v) in params {
        match k.as_str() {
            "Action" => action = Some(v),
            "Version" => {
                if v != version {
                    return Err(EcsError::new(
                        malformed,
                        format!("Version '{v}' is not supported; use {version}"),
                    ));
                }
            }
            _ => rest.push((k, v)),
        }
    }
    let Some(action) = action else {
        return Err(EcsError::new(
            ErrorKind::MissingAction,
            "The request must contain the parameter Action",
        ));
    };
    let Some(input) = model["operations"][&action]["input"]["shape"].as_str() else {
        return Err(EcsError::new(
            ErrorKind::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        ));
    };
    let json = query::params_to_json(model, input, &rest, query::is_ec2(model))
        .and_then(|v| serde_json::to_vec(&v).map_err(|e| ParseError::Serialization(e.to_string())))
        .map_err(|e| EcsError::new(malformed, e.to_string()))?;
    Ok((action, json))
}

/// Parses a Query-protocol (form-encoded) Elastic Load Balancing v2 request: its `Action`,
/// `Version` and members. Missing members are ELB's ValidationError.
pub fn parse_elb_request(body: &[u8]) -> Result<elbv2::ElbRequest, EcsError> {
    let (action, json) = parse_query(
        body,
        elbv2::model(),
        ELB_VERSION,
        ErrorKind::ValidationError,
    )?;
    match elbv2::ElbRequest::parse(&action, &json) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(EcsError::new(
            ErrorKind::InvalidAction,
            format!("Elastic Load Balancing action '{action}' is not implemented by Berth yet"),
        )),
        Err(ParseError::Serialization(m)) => Err(EcsError::new(ErrorKind::ValidationError, m)),
        Err(ParseError::Missing(path)) => Err(EcsError::new(
            ErrorKind::ValidationError,
            format!("1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null", lower_first(&path)),
        )),
    }
}

/// Parses a request in EC2's variant of the Query protocol. Missing members are EC2's
/// MissingParameter, malformed ones its InvalidParameterValue.
pub fn parse_ec2_request(body: &[u8]) -> Result<ec2::Ec2Request, EcsError> {
    let (action, json) = parse_query(
        body,
        ec2::model(),
        EC2_VERSION,
        ErrorKind::InvalidParameterValue,
    )?;
    match ec2::Ec2Request::parse(&action, &json) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(EcsError::new(
            ErrorKind::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        )),
        Err(ParseError::Serialization(m)) => {
            Err(EcsError::new(ErrorKind::InvalidParameterValue, m))
        }
        Err(ParseError::Missing(path)) => Err(EcsError::new(
            ErrorKind::MissingParameter,
            format!("The request must contain the parameter {path}"),
        )),
    }
}

/// EC2's API version, the `Version` its requests carry.
pub const EC2_VERSION: &str = "2016-11-15";

/// ELB's API version, the `Version` its requests carry.
pub const ELB_VERSION: &str = "2015-12-01";

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn parsed<R>(
    service: &str,
    operation: &str,
    parsed: Result<Option<R>, ParseError>,
    all: &[&str],
) -> Result<R, EcsError> {
    match parsed {
        Ok(Some(req)) => Ok(req),
        Ok(None) if all.contains(&operation) => Err(EcsError::new(
            ErrorKind::UnknownOperation,
            format!("{service} operation '{operation}' is not implemented by Berth yet"),
        )),
        Ok(None) => Err(EcsError::new(
            ErrorKind::UnknownOperation,
            format!("unknown operation '{operation}'"),
        )),
        Err(ParseError::Serialization(m)) => Err(EcsError::new(ErrorKind::Serialization, m)),
        Err(ParseError::Missing(path)) => Err(EcsError::new(
            ErrorKind::InvalidParameter,
            format!("Value null at '{path}' failed to satisfy constraint: Member must not be null"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(op: &str) -> String {
        format!("{ECS_TARGET_PREFIX}{op}")
    }

    #[test]
    fn parses_known_operation_and_ignores_unknown_members() {
        let req = parse_ecs_request(
            Some(&target("CreateCluster")),
            br#"{"clusterName":"a","bogus":1}"#,
        )
        .unwrap();
        match req {
            ecs::EcsRequest::CreateCluster(r) => assert_eq!(r.cluster_name.as_deref(), Some("a")),
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            parse_ecs_request(Some(&target("ListClusters")), b"").is_ok(),
            "empty body is {{}}"
        );
    }

    #[test]
    fn type_errors_name_the_member_path() {
        let err = parse_ecs_request(
            Some(&target("RegisterTaskDefinition")),
            br#"{"family":"f","containerDefinitions":[{"name":"a","cpu":"lots"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Serialization);
        assert!(
            err.message.contains("containerDefinitions[0].cpu"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_required_members_are_named() {
        let err = parse_ecs_request(
            Some(&target("RegisterTaskDefinition")),
            br#"{"family":"f"}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParameter);
        assert!(
            err.message.contains("'containerDefinitions'"),
            "{}",
            err.message
        );
        let err = parse_ecs_request(
            Some(&target("RegisterTaskDefinition")),
            br#"{"family":"f","containerDefinitions":[{"name":"a","environmentFiles":[{"value":"x"}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("containerDefinitions[0].environmentFiles[0].type"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_targets() {
        let e = parse_ecs_request(Some(&target("Frobnicate")), b"{}").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownOperation);
        let e = parse_ecs_request(Some("Other.CreateCluster"), b"{}").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownOperation);
        let e = parse_ecs_request(Some(&target("ExecuteCommand")), b"{}").unwrap_err();
        assert!(
            e.message.contains("not implemented by Berth yet"),
            "{}",
            e.message
        );
        let e = parse_ecs_request(Some(&target("ListClusters")), b"{not json").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Serialization);
    }
}
