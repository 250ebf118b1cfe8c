//! Verifies AWS Signature Version 4 on incoming requests.
//!
//! The canonical request and signature come from `aws-sigv4`, the signer the AWS SDKs use: we
//! re-sign the request over exactly the headers the client listed in `SignedHeaders`, with the
//! secret we hold for its access key, and compare signatures in constant time.

use crate::{EcsError, ErrorKind};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderMap;
use std::time::{Duration, SystemTime};
use time::{
    format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime,
};

/// How far a request's `X-Amz-Date` may be from our clock, as AWS allows.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// A request as SigV4 sees it.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Path and query, as received.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn incomplete(msg: impl Into<String>) -> EcsError {
    EcsError::new(ErrorKind::IncompleteSignature, msg)
}

/// Parses the `Authorization` header; a request without one gets AWS's "Missing Authentication
/// Token".
pub fn parse_authorization(headers: &HeaderMap) -> Result<Authorization, EcsError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(EcsError::new(
            ErrorKind::MissingAuthenticationToken,
            "Missing Authentication Token",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| incomplete("the Authorization header is not ASCII"))?;
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        incomplete(format!(
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm, got '{}'",
            value.split(' ').next().unwrap_or("")
        ))
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| {
        incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential '{credential}' must have the form ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
        )));
    };
    if access_key.is_empty()
        || signature.len() != 64
        || !signature.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(incomplete(
            "the Authorization header's Credential or Signature is malformed",
        ));
    }
    Ok(Authorization {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// The request time from `X-Amz-Date`.
fn request_time(headers: &HeaderMap) -> Result<(SystemTime, String), EcsError> {
    let raw = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("the request must carry an X-Amz-Date header"))?;
    let t = PrimitiveDateTime::parse(raw, AMZ_DATE)
        .map_err(|_| {
            incomplete(format!(
                "X-Amz-Date '{raw}' is not of the form YYYYMMDDTHHMMSSZ"
            ))
        })?
        .assume_utc();
    Ok((t.into(), raw.to_string()))
}

/// Checks the scope, the clock and the request's shape, everything but the secret. Dev mode
/// stops here, accepting any well-formed credentials.
pub fn check_well_formed(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<SystemTime, EcsError> {
    let (when, raw) = request_time(req.headers)?;
    if !raw.starts_with(&auth.date) || auth.date.len() != 8 {
        return Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'", auth.date, &raw[..raw.len().min(8)]),
        ));
    }
    if auth.region != region {
        return Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!("Credential should be scoped to a valid region, not '{}'; this server's region is '{region}'.", auth.region),
        ));
    }
    if auth.service != service {
        return Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!(
                "Credential should be scoped to correct service: '{service}', not '{}'.",
                auth.service
            ),
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(incomplete(format!(
                "SignedHeaders must include '{required}'"
            )));
        }
    }
    let fmt = |t: SystemTime| OffsetDateTime::from(t).format(AMZ_DATE).unwrap_or_default();
    if when + MAX_CLOCK_SKEW < now {
        return Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!(
                "Signature expired: {raw} is now earlier than {} ({} - 15 min.)",
                fmt(now - MAX_CLOCK_SKEW),
                fmt(now)
            ),
        ));
    }
    if when > now + MAX_CLOCK_SKEW {
        return Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!(
                "Signature not yet current: {raw} is still later than {} ({} + 15 min.)",
                fmt(now + MAX_CLOCK_SKEW),
                fmt(now)
            ),
        ));
    }
    Ok(when)
}

/// Verifies the signature with the secret held for `auth.access_key`.
pub fn verify(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), EcsError> {
    let when = check_well_formed(req, auth, region, service, now)?;
    let expected = signature_for(req, auth, secret, when)?;
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(EcsError::new(
            ErrorKind::InvalidSignature,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ))
    }
}

fn signature_for(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    when: SystemTime,
) -> Result<String, EcsError> {
    let mut headers: Vec<(&str, String)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let values: Vec<&str> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(incomplete(format!(
                "SignedHeaders lists '{name}', which the request does not carry"
            )));
        }
        headers.push((name.as_str(), values.join(",")));
    }
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let uri = format!("http://{host}{}", req.path_and_query);
    let signable = SignableRequest::new(
        req.method,
        uri,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| incomplete(format!("the request cannot be canonicalized: {e}")))?;
    let identity: Identity = Credentials::new(&auth.access_key, secret, None, None, "berth").into();
    let mut settings = SigningSettings::default();
    // Sign exactly what the client signed: no headers excluded by default.
    settings.excluded_headers = Some(Vec::new());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(when)
        .settings(settings)
        .build()
        .map_err(|e| EcsError::server(format!("signing parameters: {e}")))?
        .into();
    let (_, signature) = sign(signable, &params)
        .map_err(|e| incomplete(format!("the request cannot be signed for checking: {e}")))?
        .into_parts();
    Ok(signature)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who signs, for where: the inputs of [`sign_request`] besides the request.
#[derive(Debug, Clone, Copy)]
pub struct SigningKey<'a> {
    pub access_key: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Signs a request the way the AWS SDKs do; used by Berth's own clients and tests. Returns the
/// headers to add.
pub fn sign_request(
    key: &SigningKey<'_>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    let SigningKey {
        access_key,
        secret,
        region,
        service,
    } = *key;
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| EcsError::client(format!("cannot sign request: {e}")))?;
    let identity: Identity = Credentials::new(access_key, secret, None, None, "berth").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(when)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| EcsError::client(format!("signing parameters: {e}")))?
        .into();
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| EcsError::client(format!("cannot sign request: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Every header of a signed ECS JSON 1.1 call of `operation` to `endpoint` (`http://host:port`),
/// as an SDK sends it; the HTTP client supplies `host` itself.
pub fn ecs_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    json_request_headers(
        key,
        endpoint,
        crate::ECS_TARGET_PREFIX,
        operation,
        body,
        when,
    )
}

/// The same for an ECR operation (sign with `service: "ecr"`).
pub fn ecr_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    json_request_headers(
        key,
        endpoint,
        crate::ECR_TARGET_PREFIX,
        operation,
        body,
        when,
    )
}

/// The same for a CloudWatch Logs operation (sign with `service: "logs"`).
pub fn logs_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    json_request_headers(
        key,
        endpoint,
        crate::LOGS_TARGET_PREFIX,
        operation,
        body,
        when,
    )
}

/// Headers for a signed CloudWatch JSON 1.0 request (service `monitoring`).
pub fn cloudwatch_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    let prefix = format!("{}.", crate::CLOUDWATCH_SERVICE);
    typed_request_headers(
        key,
        endpoint,
        &prefix,
        crate::JSON_1_0_CONTENT_TYPE,
        operation,
        body,
        when,
    )
}

fn json_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    target_prefix: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    typed_request_headers(
        key,
        endpoint,
        target_prefix,
        crate::JSON_CONTENT_TYPE,
        operation,
        body,
        when,
    )
}

/// Every header of a signed Query protocol call (a form body, as botocore sends ELB's) to
/// `endpoint`; the HTTP client supplies `host` itself.
pub fn query_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    signed_post_headers(key, endpoint, &[("content-type", content_type)], body, when)
}

fn typed_request_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    target_prefix: &str,
    content_type: &str,
    operation: &str,
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    let target = format!("{target_prefix}{operation}");
    let headers = [
        ("content-type", content_type),
        ("x-amz-target", target.as_str()),
    ];
    signed_post_headers(key, endpoint, &headers, body, when)
}

/// `headers` and the signature of a POST of `body` to `endpoint` (`http://host:port`), the
/// `host` header signed but left to the HTTP client.
fn signed_post_headers(
    key: &SigningKey<'_>,
    endpoint: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    when: SystemTime,
) -> Result<Vec<(String, String)>, EcsError> {
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let base: Vec<(&str, &str)> = std::iter::once(("host", host))
        .chain(headers.iter().copied())
        .collect();
    let signed = sign_request(
        key,
        "POST",
        &format!("{}/", endpoint.trim_end_matches('/')),
        &base,
        body,
        when,
    )?;
    Ok(base[1..]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(signed)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const AK: &str = "AKIDEXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn signed(body: &[u8], when: SystemTime) -> HeaderMap {
        let base = [
            ("host", "127.0.0.1:7060"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "T.Op"),
        ];
        let extra = sign_request(
            &SigningKey {
                access_key: AK,
                secret: SK,
                region: "us-east-1",
                service: "ecs",
            },
            "POST",
            "http://127.0.0.1:7060/",
            &base,
            body,
            when,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(extra)
        {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        h
    }

    fn check(
        headers: &HeaderMap,
        body: &[u8],
        secret: &str,
        now: SystemTime,
    ) -> Result<(), EcsError> {
        let req = SignedRequest {
            method: "POST",
            path_and_query: "/",
            headers,
            body,
        };
        let auth = parse_authorization(headers)?;
        verify(&req, &auth, secret, "us-east-1", "ecs", now)
    }

    #[test]
    fn accepts_a_good_signature() {
        let now = SystemTime::now();
        let h = signed(b"{}", now);
        check(&h, b"{}", SK, now).unwrap();
    }

    #[test]
    fn rejects_tampering_wrong_secret_and_skew() {
        let now = SystemTime::now();
        let h = signed(b"{}", now);
        assert_eq!(
            check(&h, b"{\"x\":1}", SK, now).unwrap_err().kind,
            ErrorKind::InvalidSignature,
            "body changed"
        );
        assert_eq!(
            check(&h, b"{}", "other", now).unwrap_err().kind,
            ErrorKind::InvalidSignature,
            "wrong secret"
        );
        let late = now + Duration::from_secs(16 * 60);
        let e = check(&h, b"{}", SK, late).unwrap_err();
        assert!(e.message.starts_with("Signature expired"), "{}", e.message);
        let mut h2 = h.clone();
        h2.insert("x-amz-target", HeaderValue::from_static("T.Other"));
        assert_eq!(
            check(&h2, b"{}", SK, now).unwrap_err().kind,
            ErrorKind::InvalidSignature,
            "signed header changed"
        );
    }

    #[test]
    fn missing_and_malformed_authorization() {
        let h = HeaderMap::new();
        assert_eq!(
            parse_authorization(&h).unwrap_err().kind,
            ErrorKind::MissingAuthenticationToken
        );
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        assert_eq!(
            parse_authorization(&h).unwrap_err().kind,
            ErrorKind::IncompleteSignature
        );
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(
            parse_authorization(&h).unwrap_err().kind,
            ErrorKind::IncompleteSignature
        );
    }

    #[test]
    fn scope_must_match_region_and_service() {
        let now = SystemTime::now();
        let h = signed(b"{}", now);
        let req = SignedRequest {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body: b"{}",
        };
        let auth = parse_authorization(&h).unwrap();
        let e = verify(&req, &auth, SK, "eu-west-1", "ecs", now).unwrap_err();
        assert!(e.message.contains("valid region"), "{}", e.message);
        let e = verify(&req, &auth, SK, "us-east-1", "ecr", now).unwrap_err();
        assert!(
            e.message.contains("correct service: 'ecr'"),
            "{}",
            e.message
        );
    }
}
