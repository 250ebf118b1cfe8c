//! ECS's and ECR's errors as they cross the wire: `{"__type": NAME, "message": ...}` with an HTTP status.

use berth_model::{Invalid, InvalidKind};

/// The exceptions Berth answers with. Each doc line is the wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// ClientException
    Client,
    /// InvalidParameterException
    InvalidParameter,
    /// ClusterNotFoundException
    ClusterNotFound,
    /// ClusterContainsServicesException
    ClusterContainsServices,
    /// ClusterContainsContainerInstancesException
    ClusterContainsContainerInstances,
    /// ClusterContainsTasksException
    ClusterContainsTasks,
    /// ResourceNotFoundException
    ResourceNotFound,
    /// LimitExceededException
    LimitExceeded,
    /// AccessDeniedException
    AccessDenied,
    /// ServiceNotFoundException
    ServiceNotFound,
    /// ServiceNotActiveException
    ServiceNotActive,
    /// TargetNotFoundException
    TargetNotFound,
    /// ResourceInUseException
    ResourceInUse,
    /// UnsupportedFeatureException
    UnsupportedFeature,
    /// AttributeLimitExceededException
    AttributeLimitExceeded,
    /// RepositoryNotFoundException (ECR)
    RepositoryNotFound,
    /// RepositoryAlreadyExistsException (ECR)
    RepositoryAlreadyExists,
    /// RepositoryNotEmptyException (ECR)
    RepositoryNotEmpty,
    /// RepositoryPolicyNotFoundException (ECR)
    RepositoryPolicyNotFound,
    /// LifecyclePolicyNotFoundException (ECR)
    LifecyclePolicyNotFound,
    /// ServiceDeploymentNotFoundException
    ServiceDeploymentNotFound,
    /// ConflictException
    Conflict,
    /// LifecyclePolicyPreviewNotFoundException (ECR)
    LifecyclePolicyPreviewNotFound,
    /// RegistryPolicyNotFoundException (ECR)
    RegistryPolicyNotFound,
    /// ScanNotFoundException (ECR)
    ScanNotFound,
    /// PullThroughCacheRuleNotFoundException (ECR)
    PullThroughCacheRuleNotFound,
    /// PullThroughCacheRuleAlreadyExistsException (ECR)
    PullThroughCacheRuleAlreadyExists,
    /// TaskSetNotFoundException
    TaskSetNotFound,
    /// TemplateAlreadyExistsException (ECR)
    TemplateAlreadyExists,
    /// TemplateNotFoundException (ECR)
    TemplateNotFound,
    /// UnsupportedUpstreamRegistryException (ECR)
    UnsupportedUpstreamRegistry,
    /// ImageNotFoundException (ECR)
    ImageNotFound,
    /// ImageAlreadyExistsException (ECR)
    ImageAlreadyExists,
    /// ImageTagAlreadyExistsException (ECR)
    ImageTagAlreadyExists,
    /// ImageDigestDoesNotMatchException (ECR)
    ImageDigestDoesNotMatch,
    /// LayersNotFoundException (ECR)
    LayersNotFound,
    /// LayerAlreadyExistsException (ECR)
    LayerAlreadyExists,
    /// LayerPartTooSmallException (ECR)
    LayerPartTooSmall,
    /// InvalidLayerException (ECR)
    InvalidLayer,
    /// InvalidLayerPartException (ECR)
    InvalidLayerPart,
    /// UploadNotFoundException (ECR)
    UploadNotFound,
    /// EmptyUploadException (ECR)
    EmptyUpload,
    /// InvalidTagParameterException (ECR)
    InvalidTagParameter,
    /// TooManyTagsException (ECR)
    TooManyTags,
    /// ReferencedImagesNotFoundException (ECR)
    ReferencedImagesNotFound,
    /// ResourceAlreadyExistsException (Logs)
    ResourceAlreadyExists,
    /// DataAlreadyAcceptedException (Logs)
    DataAlreadyAccepted,
    /// InvalidSequenceTokenException (Logs)
    InvalidSequenceToken,
    /// OperationAbortedException (Logs)
    OperationAborted,
    /// ServiceUnavailableException (Logs; a 500 there)
    ServiceUnavailable,
    /// InvalidParameterValueException (CloudWatch; query code InvalidParameterValue)
    InvalidParameterValue,
    /// MissingRequiredParameterException (CloudWatch; query code MissingParameter)
    MissingParameter,
    /// InvalidParameterCombinationException (CloudWatch; query code InvalidParameterCombination)
    InvalidParameterCombination,
    /// InvalidNextToken (CloudWatch)
    InvalidNextToken,
    /// InternalServiceFault (CloudWatch's 500; query code InternalServiceError)
    InternalServiceFault,
    /// ServerException (the only 500)
    Server,
    /// SerializationException
    Serialization,
    /// UnknownOperationException
    UnknownOperation,
    /// MissingAuthenticationTokenException
    MissingAuthenticationToken,
    /// UnrecognizedClientException
    UnrecognizedClient,
    /// InvalidSignatureException
    InvalidSignature,
    /// IncompleteSignatureException
    IncompleteSignature,
    /// RequestEntityTooLargeException
    RequestEntityTooLarge,
    /// RequestTimeoutException
    RequestTimeout,
    // Elastic Load Balancing v2's, named by their Query error codes.
    DuplicateLoadBalancerName,
    DuplicateTargetGroupName,
    DuplicateListener,
    TooManyLoadBalancers,
    TooManyTargetGroups,
    TooManyListeners,
    TooManyRules,
    TooManyTargets,
    TooManyActions,
    TooManyElbTags,
    DuplicateTagKeys,
    InvalidConfigurationRequest,
    LoadBalancerNotFound,
    TargetGroupNotFound,
    ListenerNotFound,
    RuleNotFound,
    InvalidTarget,
    PriorityInUse,
    IncompatibleProtocols,
    ElbResourceInUse,
    UnsupportedProtocol,
    InvalidSubnet,
    SubnetNotFound,
    InvalidSecurityGroup,
    OperationNotPermitted,
    InvalidLoadBalancerAction,
    TargetGroupAssociationLimit,
    CertificateNotFound,
    InvalidScheme,
    ValidationError,
    InvalidAction,
    MissingAction,
    // EC2's, named by their (dotted) error codes.
    /// InvalidVpcID.NotFound
    InvalidVpcIdNotFound,
    /// InvalidSubnetID.NotFound
    InvalidSubnetIdNotFound,
    /// InvalidGroup.NotFound
    InvalidGroupNotFound,
    /// InvalidGroupId.Malformed
    InvalidGroupIdMalformed,
    /// InvalidVpc.Range
    InvalidVpcRange,
    /// InvalidSubnet.Range
    InvalidSubnetRange,
    /// InvalidSubnet.Conflict
    InvalidSubnetConflict,
    /// DependencyViolation
    DependencyViolation,
    /// InvalidGroup.Duplicate
    InvalidGroupDuplicate,
    /// InvalidGroup.Reserved
    InvalidGroupReserved,
    /// InvalidPermission.Duplicate
    InvalidPermissionDuplicate,
    /// InvalidPermission.NotFound
    InvalidPermissionNotFound,
    /// InvalidPermission.Malformed
    InvalidPermissionMalformed,
    /// CannotDelete
    CannotDelete,
    /// InvalidNetworkInterfaceID.NotFound
    InvalidNetworkInterfaceIdNotFound,
    /// InvalidID
    InvalidIdMalformed,
    /// UnsupportedOperation
    UnsupportedOperation,
    /// InvalidFilter
    InvalidFilter,
    /// DryRunOperation
    DryRunOperation,
}

impl ErrorKind {
    pub fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::Client => "ClientException",
            ErrorKind::InvalidParameter => "InvalidParameterException",
            ErrorKind::ClusterNotFound => "ClusterNotFoundException",
            ErrorKind::ClusterContainsServices => "ClusterContainsServicesException",
            ErrorKind::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            ErrorKind::ClusterContainsTasks => "ClusterContainsTasksException",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::LimitExceeded => "LimitExceededException",
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::ServiceNotFound => "ServiceNotFoundException",
            ErrorKind::ServiceNotActive => "ServiceNotActiveException",
            ErrorKind::TargetNotFound => "TargetNotFoundException",
            ErrorKind::ResourceInUse => "ResourceInUseException",
            ErrorKind::UnsupportedFeature => "UnsupportedFeatureException",
            ErrorKind::AttributeLimitExceeded => "AttributeLimitExceededException",
            ErrorKind::RepositoryNotFound => "RepositoryNotFoundException",
            ErrorKind::RepositoryAlreadyExists => "RepositoryAlreadyExistsException",
            ErrorKind::RepositoryNotEmpty => "RepositoryNotEmptyException",
            ErrorKind::RepositoryPolicyNotFound => "RepositoryPolicyNotFoundException",
            ErrorKind::LifecyclePolicyNotFound => "LifecyclePolicyNotFoundException",
            ErrorKind::ServiceDeploymentNotFound => "ServiceDeploymentNotFoundException",
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::LifecyclePolicyPreviewNotFound => "LifecyclePolicyPreviewNotFoundException",
            ErrorKind::RegistryPolicyNotFound => "RegistryPolicyNotFoundException",
            ErrorKind::ScanNotFound => "ScanNotFoundException",
            ErrorKind::PullThroughCacheRuleNotFound => "PullThroughCacheRuleNotFoundException",
            ErrorKind::TemplateAlreadyExists => "TemplateAlreadyExistsException",
            ErrorKind::TaskSetNotFound => "TaskSetNotFoundException",
            ErrorKind::TemplateNotFound => "TemplateNotFoundException",
            ErrorKind::PullThroughCacheRuleAlreadyExists => {
                "PullThroughCacheRuleAlreadyExistsException"
            }
            ErrorKind::UnsupportedUpstreamRegistry => "UnsupportedUpstreamRegistryException",
            ErrorKind::ImageNotFound => "ImageNotFoundException",
            ErrorKind::ImageAlreadyExists => "ImageAlreadyExistsException",
            ErrorKind::ImageTagAlreadyExists => "ImageTagAlreadyExistsException",
            ErrorKind::ImageDigestDoesNotMatch => "ImageDigestDoesNotMatchException",
            ErrorKind::LayersNotFound => "LayersNotFoundException",
            ErrorKind::LayerAlreadyExists => "LayerAlreadyExistsException",
            ErrorKind::LayerPartTooSmall => "LayerPartTooSmallException",
            ErrorKind::InvalidLayer => "InvalidLayerException",
            ErrorKind::InvalidLayerPart => "InvalidLayerPartException",
            ErrorKind::UploadNotFound => "UploadNotFoundException",
            ErrorKind::EmptyUpload => "EmptyUploadException",
            ErrorKind::InvalidTagParameter => "InvalidTagParameterException",
            ErrorKind::TooManyTags => "TooManyTagsException",
            ErrorKind::ReferencedImagesNotFound => "ReferencedImagesNotFoundException",
            ErrorKind::ResourceAlreadyExists => "ResourceAlreadyExistsException",
            ErrorKind::DataAlreadyAccepted => "DataAlreadyAcceptedException",
            ErrorKind::InvalidSequenceToken => "InvalidSequenceTokenException",
            ErrorKind::OperationAborted => "OperationAbortedException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::InvalidParameterValue => "InvalidParameterValueException",
            ErrorKind::MissingParameter => "MissingRequiredParameterException",
            ErrorKind::InvalidParameterCombination => "InvalidParameterCombinationException",
            ErrorKind::InvalidNextToken => "InvalidNextToken",
            ErrorKind::InternalServiceFault => "InternalServiceFault",
            ErrorKind::Server => "ServerException",
            ErrorKind::Serialization => "SerializationException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::IncompleteSignature => "IncompleteSignatureException",
            ErrorKind::RequestEntityTooLarge => "RequestEntityTooLargeException",
            ErrorKind::RequestTimeout => "RequestTimeoutException",
            ErrorKind::DuplicateLoadBalancerName => "DuplicateLoadBalancerName",
            ErrorKind::DuplicateTargetGroupName => "DuplicateTargetGroupName",
            ErrorKind::DuplicateListener => "DuplicateListener",
            ErrorKind::TooManyLoadBalancers => "TooManyLoadBalancers",
            ErrorKind::TooManyTargetGroups => "TooManyTargetGroups",
            ErrorKind::TooManyListeners => "TooManyListeners",
            ErrorKind::TooManyRules => "TooManyRules",
            ErrorKind::TooManyTargets => "TooManyTargets",
            ErrorKind::TooManyActions => "TooManyActions",
            ErrorKind::TooManyElbTags => "TooManyTags",
            ErrorKind::DuplicateTagKeys => "DuplicateTagKeys",
            ErrorKind::InvalidConfigurationRequest => "InvalidConfigurationRequest",
            ErrorKind::LoadBalancerNotFound => "LoadBalancerNotFound",
            ErrorKind::TargetGroupNotFound => "TargetGroupNotFound",
            ErrorKind::ListenerNotFound => "ListenerNotFound",
            ErrorKind::RuleNotFound => "RuleNotFound",
            ErrorKind::InvalidTarget => "InvalidTarget",
            ErrorKind::PriorityInUse => "PriorityInUse",
            ErrorKind::IncompatibleProtocols => "IncompatibleProtocols",
            ErrorKind::ElbResourceInUse => "ResourceInUse",
            ErrorKind::UnsupportedProtocol => "UnsupportedProtocol",
            ErrorKind::InvalidSubnet => "InvalidSubnet",
            ErrorKind::SubnetNotFound => "SubnetNotFound",
            ErrorKind::InvalidSecurityGroup => "InvalidSecurityGroup",
            ErrorKind::OperationNotPermitted => "OperationNotPermitted",
            ErrorKind::InvalidLoadBalancerAction => "InvalidLoadBalancerAction",
            ErrorKind::TargetGroupAssociationLimit => "TargetGroupAssociationLimit",
            ErrorKind::CertificateNotFound => "CertificateNotFound",
            ErrorKind::InvalidScheme => "InvalidScheme",
            ErrorKind::ValidationError => "ValidationError",
            ErrorKind::InvalidAction => "InvalidAction",
            ErrorKind::MissingAction => "MissingAction",
            ErrorKind::InvalidVpcIdNotFound => "InvalidVpcID.NotFound",
            ErrorKind::InvalidSubnetIdNotFound => "InvalidSubnetID.NotFound",
            ErrorKind::InvalidGroupNotFound => "InvalidGroup.NotFound",
            ErrorKind::InvalidGroupIdMalformed => "InvalidGroupId.Malformed",
            ErrorKind::InvalidVpcRange => "InvalidVpc.Range",
            ErrorKind::InvalidSubnetRange => "InvalidSubnet.Range",
            ErrorKind::InvalidSubnetConflict => "InvalidSubnet.Conflict",
            ErrorKind::DependencyViolation => "DependencyViolation",
            ErrorKind::InvalidGroupDuplicate => "InvalidGroup.Duplicate",
            ErrorKind::InvalidGroupReserved => "InvalidGroup.Reserved",
            ErrorKind::InvalidPermissionDuplicate => "InvalidPermission.Duplicate",
            ErrorKind::InvalidPermissionNotFound => "InvalidPermission.NotFound",
            ErrorKind::InvalidPermissionMalformed => "InvalidPermission.Malformed",
            ErrorKind::CannotDelete => "CannotDelete",
            ErrorKind::InvalidNetworkInterfaceIdNotFound => "InvalidNetworkInterfaceID.NotFound",
            ErrorKind::InvalidIdMalformed => "InvalidID",
            ErrorKind::UnsupportedOperation => "UnsupportedOperation",
            ErrorKind::InvalidFilter => "InvalidFilter",
            ErrorKind::DryRunOperation => "DryRunOperation",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Server | ErrorKind::ServiceUnavailable | ErrorKind::InternalServiceFault => {
                500
            }
            ErrorKind::MissingAuthenticationToken
            | ErrorKind::UnrecognizedClient
            | ErrorKind::InvalidSignature
            | ErrorKind::IncompleteSignature => 403,
            ErrorKind::RequestEntityTooLarge => 413,
            ErrorKind::DryRunOperation => 412,
            ErrorKind::RequestTimeout => 408,
            _ => 400,
        }
    }
}

impl ErrorKind {
    /// The error code of services that keep their older Query protocol's codes
    /// (`awsQueryCompatible`, as CloudWatch does), sent as `x-amzn-query-error: CODE;FAULT`.
    pub fn query_code(self) -> &'static str {
        match self {
            ErrorKind::InvalidParameterValue => "InvalidParameterValue",
            ErrorKind::MissingParameter => "MissingParameter",
            ErrorKind::InvalidParameterCombination => "InvalidParameterCombination",
            ErrorKind::InternalServiceFault => "InternalServiceError",
            other => other.wire_name(),
        }
    }
}

/// An error answer: the exception and a message that says what was wrong, with which value.
impl ErrorKind {
    /// The code a Query-protocol (XML) service answers with: ELB's own kinds by their code,
    /// the shared ones by the names Query services use for them.
    pub fn xml_code(self) -> &'static str {
        match self {
            ErrorKind::Serialization | ErrorKind::InvalidParameter => "ValidationError",
            ErrorKind::UnknownOperation => "InvalidAction",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationToken",
            ErrorKind::UnrecognizedClient => "InvalidClientTokenId",
            ErrorKind::InvalidSignature => "SignatureDoesNotMatch",
            ErrorKind::IncompleteSignature => "IncompleteSignature",
            ErrorKind::AccessDenied => "AccessDenied",
            ErrorKind::Server => "InternalFailure",
            ErrorKind::ResourceNotFound => "ResourceNotFound",
            ErrorKind::RequestTimeout => "RequestTimeout",
            ErrorKind::RequestEntityTooLarge => "RequestEntityTooLarge",
            other => other.wire_name(),
        }
    }

    /// The code EC2 answers with: its own kinds by their code, the shared ones by EC2's names.
    pub fn ec2_code(self) -> &'static str {
        match self {
            ErrorKind::Serialization
            | ErrorKind::InvalidParameter
            | ErrorKind::ValidationError
            | ErrorKind::InvalidParameterValue => "InvalidParameterValue",
            ErrorKind::MissingParameter => "MissingParameter",
            ErrorKind::InvalidParameterCombination => "InvalidParameterCombination",
            ErrorKind::UnknownOperation | ErrorKind::InvalidAction => "InvalidAction",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationToken",
            ErrorKind::UnrecognizedClient
            | ErrorKind::InvalidSignature
            | ErrorKind::IncompleteSignature => "AuthFailure",
            ErrorKind::AccessDenied => "UnauthorizedOperation",
            ErrorKind::Server | ErrorKind::InternalServiceFault => "InternalError",
            ErrorKind::LimitExceeded => "ResourceLimitExceeded",
            ErrorKind::RequestTimeout => "RequestTimeout",
            ErrorKind::RequestEntityTooLarge => "RequestEntityTooLarge",
            other => other.wire_name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.wire_name())]
pub struct EcsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EcsError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EcsError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        EcsError::new(ErrorKind::InvalidParameter, message)
    }

    pub fn client(message: impl Into<String>) -> Self {
        EcsError::new(ErrorKind::Client, message)
    }

    pub fn server(message: impl Into<String>) -> Self {
        EcsError::new(ErrorKind::Server, message)
    }

    /// The JSON body botocore parses: `{"__type": ..., "message": ...}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(
            &serde_json::json!({ "__type": self.kind.wire_name(), "message": self.message }),
        )
        .unwrap_or_else(|_| b"{}".to_vec())
    }
}

impl EcsError {
    /// The Smithy RPC v2 CBOR body: `{"__type": "NAMESPACE#NAME", "message": ...}`.
    pub fn to_cbor(&self, namespace: &str) -> Vec<u8> {
        crate::cbor::encode_json(&serde_json::json!({
            "__type": format!("{namespace}#{}", self.kind.wire_name()),
            "message": self.message,
        }))
    }
}

impl From<Invalid> for EcsError {
    fn from(e: Invalid) -> Self {
        let kind = match e.kind {
            InvalidKind::Parameter => ErrorKind::InvalidParameter,
            InvalidKind::Client => ErrorKind::Client,
        };
        EcsError::new(kind, e.message)
    }
}

/// Checks a string against one of the model's enumerations.
pub fn check_enum(field: &str, value: &str, allowed: &[&str]) -> Result<(), EcsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "{field} '{value}' is not one of: {}",
            allowed.join(", ")
        )))
    }
}
