//! Berth's image registry: ECR with both of its faces.
//!
//! - [`http`]: the OCI distribution protocol under `/v2/` (what `docker push`/`pull` and skopeo
//!   speak) on its own listener, with the token flow docker expects.
//! - [`ecr`]: ECR's JSON API ([`berth_api::ecr::EcrRequest`]), served by the control plane's
//!   listener next to ECS.
//! - [`images`]: the one implementation of repositories, manifests, tags, blob links and
//!   uploads that both faces call. Metadata lives in the [`Store`]; blob bytes in a
//!   [`BlobStore`] ([`blobs::FsBlobs`]: local files sealed with AES-256-GCM, see [`seal`]).
//! - [`lifecycle`] (pure) evaluates lifecycle policies; [`housekeeping`] applies them and
//!   collects blobs nothing references.
//! - [`auth`]: registry passwords (the token GetAuthorizationToken hands out) and who may do
//!   what.

pub mod account;
pub mod auth;
pub mod blobs;
pub mod ecr;
pub mod housekeeping;
pub mod http;
pub mod images;
pub mod lifecycle;
pub mod manifest;
pub mod names;
pub mod pull_through;
pub mod replication;
pub mod seal;
pub mod templates;

use berth_api::{EcsError, ErrorKind};
use berth_store::{Store, StoreError};
pub use blobs::BlobStore;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong in the registry. Each variant maps to one distribution-spec
/// error code ([`Error::oci_code`]) and one ECR exception ([`Error::to_ecr`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// BLOB_UNKNOWN
    #[error("{0}")]
    BlobUnknown(String),
    /// BLOB_UPLOAD_INVALID
    #[error("{0}")]
    BlobUploadInvalid(String),
    /// BLOB_UPLOAD_UNKNOWN
    #[error("{0}")]
    BlobUploadUnknown(String),
    /// DIGEST_INVALID
    #[error("{0}")]
    DigestInvalid(String),
    /// MANIFEST_BLOB_UNKNOWN
    #[error("{0}")]
    ManifestBlobUnknown(String),
    /// MANIFEST_INVALID
    #[error("{0}")]
    ManifestInvalid(String),
    /// MANIFEST_UNKNOWN
    #[error("{0}")]
    ManifestUnknown(String),
    /// NAME_INVALID
    #[error("{0}")]
    NameInvalid(String),
    /// NAME_UNKNOWN
    #[error("{0}")]
    NameUnknown(String),
    /// SIZE_INVALID
    #[error("{0}")]
    SizeInvalid(String),
    /// TAG_INVALID
    #[error("{0}")]
    TagInvalid(String),
    /// TAG_INVALID: the tag exists in an IMMUTABLE repository.
    #[error("{0}")]
    TagImmutable(String),
    /// RANGE_INVALID (416)
    #[error("{0}")]
    RangeInvalid(String),
    /// UNAUTHORIZED (401)
    #[error("{0}")]
    Unauthorized(String),
    /// DENIED (403)
    #[error("{0}")]
    Denied(String),
    /// UNSUPPORTED
    #[error("{0}")]
    Unsupported(String),
    /// A request parameter is wrong (ECR's InvalidParameterException).
    #[error("{0}")]
    Invalid(String),
    /// An error only ECR's API has a name for.
    #[error("{0}")]
    Ecr(EcsError),
    /// A stored blob failed authentication or is truncated.
    #[error("stored blob is damaged: {0}")]
    Corrupt(String),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The distribution spec's code and HTTP status.
    pub fn oci_code(&self) -> (&'static str, u16) {
        match self {
            Error::BlobUnknown(_) => ("BLOB_UNKNOWN", 404),
            Error::BlobUploadInvalid(_) => ("BLOB_UPLOAD_INVALID", 400),
            Error::BlobUploadUnknown(_) => ("BLOB_UPLOAD_UNKNOWN", 404),
            Error::DigestInvalid(_) => ("DIGEST_INVALID", 400),
            Error::ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", 400),
            Error::ManifestInvalid(_) => ("MANIFEST_INVALID", 400),
            Error::ManifestUnknown(_) => ("MANIFEST_UNKNOWN", 404),
            Error::NameInvalid(_) => ("NAME_INVALID", 400),
            Error::NameUnknown(_) => ("NAME_UNKNOWN", 404),
            Error::SizeInvalid(_) => ("SIZE_INVALID", 400),
            Error::TagInvalid(_) | Error::TagImmutable(_) => ("TAG_INVALID", 400),
            Error::RangeInvalid(_) => ("RANGE_INVALID", 416),
            Error::Unauthorized(_) => ("UNAUTHORIZED", 401),
            Error::Denied(_) => ("DENIED", 403),
            Error::Unsupported(_) => ("UNSUPPORTED", 405),
            Error::Invalid(_) => ("UNSUPPORTED", 400),
            Error::Ecr(e) => match e.kind {
                ErrorKind::RepositoryNotFound => ("NAME_UNKNOWN", 404),
                ErrorKind::ImageNotFound => ("MANIFEST_UNKNOWN", 404),
                ErrorKind::AccessDenied => ("DENIED", 403),
                _ => ("UNKNOWN", 400),
            },
            Error::Corrupt(_) | Error::Io(_) | Error::Store(_) | Error::Internal(_) => {
                ("UNKNOWN", 500)
            }
        }
    }

    /// The ECR exception for this error.
    pub fn to_ecr(&self) -> EcsError {
        let kind = match self {
            Error::BlobUnknown(_) | Error::ManifestBlobUnknown(_) => ErrorKind::LayersNotFound,
            Error::BlobUploadUnknown(_) => ErrorKind::UploadNotFound,
            Error::BlobUploadInvalid(_) | Error::RangeInvalid(_) => ErrorKind::InvalidLayerPart,
            Error::DigestInvalid(_) => ErrorKind::InvalidLayer,
            Error::ManifestUnknown(_) => ErrorKind::ImageNotFound,
            Error::NameUnknown(_) => ErrorKind::RepositoryNotFound,
            Error::TagImmutable(_) => ErrorKind::ImageTagAlreadyExists,
            Error::ManifestInvalid(_)
            | Error::NameInvalid(_)
            | Error::SizeInvalid(_)
            | Error::TagInvalid(_)
            | Error::Unsupported(_)
            | Error::Invalid(_) => ErrorKind::InvalidParameter,
            Error::Unauthorized(_) | Error::Denied(_) => ErrorKind::AccessDenied,
            Error::Ecr(e) => return e.clone(),
            Error::Corrupt(_) | Error::Io(_) | Error::Store(_) | Error::Internal(_) => {
                ErrorKind::Server
            }
        };
        EcsError::new(kind, self.to_string())
    }

    pub(crate) fn ecr(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::Ecr(EcsError::new(kind, message))
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub principal_arn: String,
    /// Set for an agent's key: it may pull, never push or delete.
    pub instance: Option<String>,
}

/// How the registry finds access keys; the control plane owns them.
#[async_trait::async_trait]
pub trait Keys: Send + Sync + std::fmt::Debug {
    async fn lookup(&self, access_key_id: &str) -> Result<Option<Principal>, Error>;
}

/// What a registry is, as the operator configured it.
#[derive(Debug, Clone)]
pub struct Config {
    pub region: String,
    pub account_id: String,
    /// `host:port` clients reach the registry at: repository URIs and proxyEndpoint use it.
    pub endpoint: String,
    /// Whether GET and HEAD under `/v2/` work without credentials.
    pub anonymous_pull: bool,
    /// How long GetAuthorizationToken's passwords last (ECR: 12 hours).
    pub token_lifetime: Duration,
    /// Blobs nothing references are collected once they are this old, so a push in progress
    /// (layers first, manifest last) never loses its layers.
    pub gc_grace: Duration,
    /// Uploads untouched for this long are discarded.
    pub upload_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            endpoint: "127.0.0.1:7070".into(),
            anonymous_pull: false,
            token_lifetime: Duration::from_secs(12 * 3600),
            gc_grace: Duration::from_secs(3600),
            upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// The registry: cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub keys: Arc<dyn Keys>,
    pub config: Arc<Config>,
    /// The registries of the server's other regions, for replication; `None`: this one
    /// stands alone.
    pub peers: Option<Arc<dyn replication::Peers>>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        keys: Arc<dyn Keys>,
        config: Config,
    ) -> Registry {
        Registry {
            store,
            blobs,
            keys,
            config: Arc::new(config),
            peers: None,
        }
    }
}

/// Seconds since the epoch with millisecond precision, as ECR's timestamps are.
pub(crate) fn now_epoch() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}
