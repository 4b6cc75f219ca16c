//! AWS adapters: the S3 object sink ([`s3`]), the DynamoDB dedup store
//! ([`dynamodb`]), the shard reader of replay ([`kinesis_stream`]),
//! configuration from the environment and client set-up ([`config`]), the Lambda deadline guard ([`deadline`]), the Lambda
//! invocation ([`handler`]) and its Embedded Metric Format line ([`metrics`]).
//!
//! This file is the one place that decides what an SDK failure means: whether
//! retrying can help, and what to tell the operator ([`classify`]). The SDK
//! itself retries transient failures (standard mode, see [`config`]); what
//! reaches the adapters has exhausted those retries.

pub mod config;
pub mod deadline;
pub mod dynamodb;
pub mod handler;
pub mod kinesis_stream;
pub mod metrics;
pub mod s3;

pub use config::{AwsLake, ClientSettings, ConfigError, LambdaMode};
pub use deadline::Deadline;
pub use dynamodb::DynamoStore;
pub use s3::S3Sink;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What an SDK failure means, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Whether the same request may succeed later unchanged (throttling,
    /// timeouts, connection failures, server errors).
    pub transient: bool,
    /// What happened and what to do about it.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Error codes that mean "too fast or too busy now, fine later".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "TransactionConflictException",
    "InternalError",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Error codes of bad credentials.
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
];

/// Classifies an SDK failure of `service` (`S3`, `DynamoDB`) and says what
/// to check. The only place that knows which failures are worth a retry.
pub fn classify<E>(service: &str, err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = DisplayErrorContext(err);
    let transient = |hint: &str| Failure {
        transient: true,
        message: format!("{detail} ({hint})"),
    };
    let permanent = |hint: &str| Failure {
        transient: false,
        message: format!("{detail} ({hint})"),
    };
    match err {
        SdkError::TimeoutError(_) => {
            transient(&format!("{service} did not answer in time; transient"))
        }
        SdkError::DispatchFailure(d) if d.is_user() => permanent(&format!(
            "the request to {service} could not be sent; check the endpoint URL and AWS settings"
        )),
        SdkError::DispatchFailure(d) if d.is_timeout() => transient(&format!(
            "connecting to {service} timed out; check the network and the endpoint{}",
            endpoint_hint(service)
        )),
        SdkError::DispatchFailure(_) => transient(&format!(
            "cannot reach {service}; check the network and the endpoint{}",
            endpoint_hint(service)
        )),
        SdkError::ConstructionFailure(_) => {
            permanent("the request could not be built; check AWS_REGION and the AWS credentials")
        }
        SdkError::ResponseError(_) => {
            transient(&format!("{service} sent an unreadable answer; transient"))
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
                transient(&format!("{service} is busy or failing; transient"))
            } else if CREDENTIAL_CODES.contains(&code) {
                permanent("check the AWS credentials")
            } else if code.starts_with("AccessDenied") || status == 403 {
                permanent(&format!(
                    "access denied: check that the IAM policy grants this {service} action on this resource"
                ))
            } else if code == "NoSuchBucket" {
                permanent("the bucket does not exist: check the bucket name and region")
            } else if code == "ResourceNotFoundException" {
                permanent("the table does not exist: check the table name and region")
            } else {
                permanent(&format!("{service} refused the request (HTTP {status})"))
            }
        }
        // SdkError is non-exhaustive
        _ => transient(&format!("unexpected {service} failure")),
    }
}

/// Which variable overrides a service's endpoint, for messages.
fn endpoint_hint(service: &str) -> String {
    let var = match service {
        "S3" => "AWS_ENDPOINT_URL_S3",
        "DynamoDB" => "AWS_ENDPOINT_URL_DYNAMODB",
        s if s.starts_with("Kinesis") => "AWS_ENDPOINT_URL_KINESIS",
        _ => "AWS_ENDPOINT_URL",
    };
    let set = std::env::var(var)
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .map(|v| format!(", now {v}"))
        .unwrap_or_default();
    format!(" ({var}{set})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_sdk_s3::primitives::SdkBody;

    fn service_error(status: u16, code: &str) -> SdkError<ListObjectsV2Error, HttpResponse> {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code(code)
            .message("m")
            .build();
        let raw = HttpResponse::new(status.try_into().expect("valid status"), SdkBody::from("x"));
        SdkError::service_error(ListObjectsV2Error::generic(meta), raw)
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(classify("S3", &service_error(503, "SlowDown")).transient);
        assert!(classify("S3", &service_error(500, "Whatever")).transient);
        assert!(
            classify(
                "DynamoDB",
                &service_error(400, "ProvisionedThroughputExceededException")
            )
            .transient
        );
    }

    #[test]
    fn configuration_errors_are_permanent_and_say_what_to_check() {
        let f = classify("S3", &service_error(403, "AccessDenied"));
        assert!(!f.transient);
        assert!(f.message.contains("IAM policy"), "{}", f.message);
        let f = classify("S3", &service_error(404, "NoSuchBucket"));
        assert!(!f.transient);
        assert!(f.message.contains("bucket does not exist"), "{}", f.message);
        let f = classify("S3", &service_error(403, "InvalidAccessKeyId"));
        assert!(f.message.contains("credentials"), "{}", f.message);
    }
}
