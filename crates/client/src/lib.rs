//! A signed client of Berth's AWS APIs (ECS, ECR, CloudWatch Logs, CloudWatch metrics, Elastic
//! Load Balancing v2), for Berth's own CLI.
//! It speaks exactly what the AWS SDKs speak: JSON 1.1 (1.0 for CloudWatch) bodies with
//! `X-Amz-Target`, or for ELB the Query protocol (a form, an XML answer); SigV4 with the
//! service's signing name; and AWS's error shapes back. Settings come from [`profile`].

pub mod profile;

use berth_api::sigv4::{self, SigningKey};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Http};
use hyper_util::rt::TokioExecutor;
use serde::{de::DeserializeOwned, Serialize};
use std::time::{Duration, SystemTime};

pub use profile::{Flags, Settings};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error: its exception name and message, as AWS sends them.
    #[error("{code}: {message}")]
    Api {
        code: String,
        message: String,
        status: u16,
    },
    /// The server could not be reached or stopped answering.
    #[error("cannot reach {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The answer is not what the operation returns.
    #[error("{operation}: the answer is not valid: {source}")]
    Decode {
        operation: String,
        #[source]
        source: serde_json::Error,
    },
    /// The request could not be made (signing, encoding).
    #[error("{0}")]
    Request(String),
    /// No credentials were found anywhere.
    #[error("{0}")]
    Settings(String),
}

impl ClientError {
    /// The AWS exception name, for an error the service sent.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The APIs the client calls: each its target prefix and signing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Ecs,
    Ecr,
    Logs,
    /// CloudWatch metrics, in its JSON 1.0 protocol.
    CloudWatch,
}

impl Api {
    fn signing_name(self) -> &'static str {
        match self {
            Api::Ecs => "ecs",
            Api::Ecr => "ecr",
            Api::Logs => "logs",
            Api::CloudWatch => "monitoring",
        }
    }
}

/// One endpoint, one key, one region.
#[derive(Debug, Clone)]
pub struct Client {
    settings: Settings,
    http: Http<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    pub fn new(settings: Settings) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Client {
            settings,
            http: Http::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(60),
        }
    }

    /// The client the flags and this machine's environment and files give (see
    /// [`profile::resolve`]); `berth_data_dir` is where a local `berth up` keeps its key.
    pub fn from_environment(
        flags: &Flags,
        berth_data_dir: &std::path::Path,
    ) -> Result<Client, ClientError> {
        let env: std::collections::BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let file = |var: &str, default: &str| {
            env.get(var)
                .map(std::path::PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
                .and_then(|p| std::fs::read_to_string(p).ok())
        };
        let sources = profile::Sources {
            credentials_file: file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            config_file: file("AWS_CONFIG_FILE", "config"),
            berth_credentials: std::fs::read_to_string(berth_data_dir.join("credentials")).ok(),
            env,
        };
        let settings = profile::resolve(flags, &sources).map_err(|m| {
            ClientError::Settings(match m {
                profile::Missing::Profile(p) => format!(
                    "the profile '{p}' is in neither ~/.aws/credentials nor ~/.aws/config"
                ),
                profile::Missing::ProfileKey(p) => format!(
                    "the profile '{p}' has no aws_access_key_id and aws_secret_access_key"
                ),
                profile::Missing::Credentials => format!(
                    "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the export lines `berth server` printed), \
                     name a profile with --profile, or start `berth up` on this machine (it keeps its key in {})",
                    berth_data_dir.join("credentials").display()
                ),
            })
        })?;
        Ok(Client::new(settings))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Calls `operation` of `api` with `request`; the typed answer or the service's error.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        api: Api,
        operation: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Request(e.to_string()))?;
        let s = &self.settings;
        let key = SigningKey {
            access_key: &s.access_key_id,
            secret: &s.secret_access_key,
            region: &s.region,
            service: api.signing_name(),
        };
        let now = SystemTime::now();
        let headers = match api {
            Api::Ecs => sigv4::ecs_request_headers(&key, &s.endpoint, operation, &body, now),
            Api::Ecr => sigv4::ecr_request_headers(&key, &s.endpoint, operation, &body, now),
            Api::Logs => sigv4::logs_request_headers(&key, &s.endpoint, operation, &body, now),
            Api::CloudWatch => {
                sigv4::cloudwatch_request_headers(&key, &s.endpoint, operation, &body, now)
            }
        }
        .map_err(|e| ClientError::Request(e.message))?;
        let (status, bytes) = self.send(headers, body).await?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            operation: operation.to_string(),
            source,
        })
    }

    /// Calls `operation` of Elastic Load Balancing v2 (the Query protocol: a form body, an XML
    /// answer) with `input`, the operation's input structure as JSON under the model's member
    /// names (as `berth_api::elbv2`'s shapes serialize); the typed output or the service's error.
    pub async fn elb<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        use berth_api::query::client::{encode_request, read_error, read_response};
        let model = berth_api::elbv2::model();
        let input =
            serde_json::to_value(request).map_err(|e| ClientError::Request(e.to_string()))?;
        let body = encode_request(model, operation, berth_api::ELB_VERSION, &input)
            .map_err(ClientError::Request)?;
        let s = &self.settings;
        let key = SigningKey {
            access_key: &s.access_key_id,
            secret: &s.secret_access_key,
            region: &s.region,
            service: ELB_SIGNING_NAME,
        };
        let headers =
            sigv4::query_request_headers(&key, &s.endpoint, body.as_bytes(), SystemTime::now())
                .map_err(|e| ClientError::Request(e.message))?;
        let (status, bytes) = self.send(headers, body.into_bytes()).await?;
        let text = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            return Err(match read_error(&text) {
                Some((code, message)) => ClientError::Api {
                    code,
                    message,
                    status,
                },
                None => ClientError::Api {
                    code: format!("HTTP {status}"),
                    message: text.into_owned(),
                    status,
                },
            });
        }
        let output = read_response(model, operation, &text).map_err(|e| {
            ClientError::Request(format!("{operation}: the answer is not valid: {e}"))
        })?;
        serde_json::from_value(output).map_err(|source| ClientError::Decode {
            operation: operation.to_string(),
            source,
        })
    }

    /// POSTs a signed body to the endpoint; the status and the whole answer.
    async fn send(
        &self,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        let s = &self.settings;
        let mut req = http::Request::post(format!("{}/", s.endpoint.trim_end_matches('/')));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let unreachable = |detail: String| ClientError::Unreachable {
            endpoint: s.endpoint.clone(),
            detail,
        };
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(connect_detail(&e)))?;
        let status = resp.status().as_u16();
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer stalled".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// The name Elastic Load Balancing signs requests with.
const ELB_SIGNING_NAME: &str = "elasticloadbalancing";

/// hyper's connect errors say "client error (Connect)"; the cause says what happened.
fn connect_detail(e: &hyper_util::client::legacy::Error) -> String {
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        detail = c.to_string();
        cause = c.source();
    }
    detail
}

/// AWS's JSON error shape: `__type` (possibly `prefix#Name`) and `message` (or `Message`).
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ClientError::Api {
        code,
        message,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_exception_name_without_its_namespace() {
        let e = api_error(
            400,
            br#"{"__type":"com.amazonaws.ecs#ServiceNotFoundException","message":"Service not found."}"#,
        );
        assert_eq!(e.code(), Some("ServiceNotFoundException"));
        assert_eq!(
            e.to_string(),
            "ServiceNotFoundException: Service not found."
        );
        let e = api_error(502, b"bad gateway");
        assert_eq!(e.to_string(), "HTTP 502: bad gateway");
    }
}
