//! Configuration of the AWS lake from the environment (the Lambda function) or
//! from the command line (`--lake s3://...`), validated with errors that name
//! the variable and what to set; and the SDK clients built from it, once.
//!
//! Environment variables of the Lambda function:
//! - `LAKE_BUCKET` (required): the lake's S3 bucket.
//! - `LAKE_PREFIX` (optional, default empty): key prefix of the lake inside the
//!   bucket, without leading or trailing `/`.
//! - `DEDUP_TABLE` (required unless `DEDUP_MODE=window`): the DynamoDB dedup table (partition key
//!   `event_uuid`, TTL attribute `expires_at`).
//! - `DEDUP_MODE` (optional, default `dynamodb`): `window` keeps no claims
//!   and needs no `DEDUP_TABLE`: a retry of the same records stages nothing
//!   new, and the publisher drops repeats within its 1-hour look-back.
//! - `DEDUP_TTL_HOURS` (optional, default 168): how long a claim is kept. A
//!   re-send of an event arriving later than this is written again.
//! - `LAKE_IO_CONCURRENCY` (optional, default 64): requests in flight at once,
//!   per service.
//! - `PUBLISH_WINDOW_SECONDS` (optional, default 300): the publication window;
//!   each batch is staged into the window of its start, and the publisher
//!   writes one file per partition per window. `0`: no staging, each batch
//!   writes its files at once.
//! - `CREATED_AT_UNIT` (optional, default `s`): the unit of every event's
//!   `created_at`: `s`, `ms`, `us` or `ns` (converted to seconds exactly).
//! - `LAKE_FUNCTION` (optional, default `consume`): `publish` makes the
//!   function the scheduled publisher (it needs no `DEDUP_TABLE`), with
//!   `PUBLISH_GRACE_SECONDS` (default 30) and `PUBLISH_TARGET_FILE_MIB`
//!   (default 128).
//! - `TABLE_FORMAT` (publisher, optional, default `hive`): `iceberg` also
//!   commits each published window to an Apache Iceberg table, whose catalog
//!   is in the lake (`_iceberg/metadata/`) or, with `ICEBERG_REST_URI`, an
//!   Iceberg REST catalog (`ICEBERG_WAREHOUSE`, `ICEBERG_NAMESPACE`,
//!   `ICEBERG_TABLE`, `ICEBERG_CREDENTIAL`, `ICEBERG_SIGV4_SERVICE`: `glue` or
//!   `s3tables` for AWS's endpoints).
//! - `LAKE_DIR` (local trials only, when `LAKE_BUCKET` is unset): a folder lake
//!   with the embedded dedup store instead of S3 and DynamoDB.
//! - `KL_CREATE_RESOURCES=1` (local trials only): create the bucket and the
//!   table at start-up if missing.
//! - `RUST_LOG` (default `info`), and the standard AWS variables
//!   (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`,
//!   `AWS_ENDPOINT_URL_DYNAMODB`; `AWS_ENDPOINT_URL_KINESIS` for the CLI's
//!   replay of metadata-only failed batches). With an S3 endpoint override, S3 is
//!   addressed path-style (`http://host/bucket/key`), as local servers need.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::core::dedup::DedupMode;
use crate::core::iceberg::TableFormat;

/// A configuration that cannot work. Says which setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{var} is not set: {what}")]
    Missing {
        /// The variable or option.
        var: &'static str,
        /// What to set it to.
        what: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("{var}={value:?} is invalid: {why}")]
    Invalid {
        /// The variable or option.
        var: &'static str,
        /// The value given.
        value: String,
        /// Why, and what would be valid.
        why: String,
    },
}

/// Default lifetime of a dedup claim: 7 days.
pub const DEFAULT_TTL_HOURS: u32 = 168;
/// Default number of requests in flight per service.
pub const DEFAULT_IO_CONCURRENCY: usize = 64;

/// Where an AWS lake lives and how it is deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsLake {
    /// The S3 bucket.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// The DynamoDB dedup table.
    pub table: String,
    /// Lifetime of a claim, hours.
    pub ttl_hours: u32,
    /// Requests in flight at once, per service.
    pub io_concurrency: usize,
}

impl AwsLake {
    /// Lifetime of a claim, seconds.
    pub fn ttl_secs(&self) -> i64 {
        i64::from(self.ttl_hours) * 3600
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The lake's dedup store and object sink, with clients built from
    /// `settings` (no request is sent yet).
    pub async fn connect(
        &self,
        settings: &ClientSettings,
    ) -> Result<(crate::aws::DynamoStore, crate::aws::S3Sink), ConfigError> {
        let clients = Clients::load(settings).await?;
        let store = crate::aws::DynamoStore::new(
            clients.dynamodb,
            &self.table,
            self.ttl_secs(),
            self.io_concurrency,
        );
        Ok((store, crate::aws::S3Sink::new(clients.s3, &self.bucket)))
    }
}

/// Where the Lambda function writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LambdaMode {
    /// S3 and DynamoDB (production).
    Aws {
        /// The lake.
        lake: AwsLake,
        /// Create the bucket and table if missing (`KL_CREATE_RESOURCES=1`).
        create_resources: bool,
    },
    /// A folder with the embedded dedup store (`LAKE_DIR`, local trials).
    Local {
        /// The lake folder.
        dir: PathBuf,
    },
}

/// Reads a variable; empty counts as unset.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

impl LambdaMode {
    /// Reads the Lambda function's configuration from the process environment.
    pub fn from_env() -> Result<LambdaMode, ConfigError> {
        LambdaMode::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `env` (a variable lookup).
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<LambdaMode, ConfigError> {
        let Some(bucket) = var(env, "LAKE_BUCKET") else {
            return match var(env, "LAKE_DIR") {
                Some(dir) => Ok(LambdaMode::Local {
                    dir: PathBuf::from(dir),
                }),
                None => Err(ConfigError::Missing {
                    var: "LAKE_BUCKET",
                    what: "set LAKE_BUCKET to the lake's S3 bucket (with DEDUP_TABLE), or LAKE_DIR to a local folder for trials",
                }),
            };
        };
        let table = match var(env, "DEDUP_TABLE") {
            Some(t) => t,
            // the publisher reads and writes the lake only; window dedup
            // has no table
            None if function_role(env)? == FunctionRole::Publish => String::new(),
            None if dedup_mode(env)? == DedupMode::Window => String::new(),
            None => {
                return Err(ConfigError::Missing {
                    var: "DEDUP_TABLE",
                    what: "set DEDUP_TABLE to the DynamoDB dedup table (partition key event_uuid, type S)",
                });
            }
        };
        let ttl_hours = match var(env, "DEDUP_TTL_HOURS") {
            Some(v) => parse_ttl_hours("DEDUP_TTL_HOURS", &v)?,
            None => DEFAULT_TTL_HOURS,
        };
        let io_concurrency = match var(env, "LAKE_IO_CONCURRENCY") {
            Some(v) => parse_concurrency("LAKE_IO_CONCURRENCY", &v)?,
            None => DEFAULT_IO_CONCURRENCY,
        };
        let lake = AwsLake {
            bucket: validate_bucket("LAKE_BUCKET", bucket.trim())?,
            prefix: validate_prefix("LAKE_PREFIX", env("LAKE_PREFIX").unwrap_or_default().trim())?,
            table: if table.is_empty() {
                table
            } else {
                validate_table("DEDUP_TABLE", table.trim())?
            },
            ttl_hours,
            io_concurrency,
        };
        let create_resources = match var(env, "KL_CREATE_RESOURCES").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "KL_CREATE_RESOURCES",
                    value: other.into(),
                    why: "use 1 (create the bucket and table if missing, for local trials) or 0"
                        .into(),
                });
            }
        };
        Ok(LambdaMode::Aws {
            lake,
            create_resources,
        })
    }
}

/// Whether to keep each event's JSON in a `payload_json` column
/// (`LAKE_PAYLOAD_JSON=1`; default off).
pub fn payload_json(env: &dyn Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match var(env, "LAKE_PAYLOAD_JSON").as_deref() {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            var: "LAKE_PAYLOAD_JSON",
            value: other.into(),
            why: "use 1 (keep each event's JSON as received in a payload_json column) or 0".into(),
        }),
    }
}

/// The Parquet page codec (`LAKE_COMPRESSION`: `zstd` (level 1, the
/// default), `auto` (zstd level 1 for column chunks from 2 KiB, snappy
/// below), `zstd(N)` (1..=22, or fast levels -1..=-7), `snappy` or `none`).
pub fn compression(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::core::parquet_file::Codec, ConfigError> {
    match var(env, "LAKE_COMPRESSION") {
        None => Ok(crate::core::parquet_file::Codec::Zstd(1)),
        Some(v) => {
            crate::core::parquet_file::Codec::parse(&v).map_err(|why| ConfigError::Invalid {
                var: "LAKE_COMPRESSION",
                value: v.clone(),
                why,
            })
        }
    }
}

/// The publication window (`PUBLISH_WINDOW_SECONDS`: 60 to 900, default
/// 300; `0` writes each batch's files at once, without staging).
pub fn window_secs(env: &dyn Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    let Some(v) = var(env, "PUBLISH_WINDOW_SECONDS") else {
        return Ok(crate::core::window::DEFAULT_WINDOW_SECS);
    };
    let range = crate::core::window::WINDOW_SECS_RANGE;
    match v.trim().parse::<u32>() {
        Ok(0) => Ok(0),
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var: "PUBLISH_WINDOW_SECONDS",
            value: v,
            why: format!(
                "use 0 (no staging: one file per partition per batch) or {} to {} seconds (default 300); the consumer and the publisher must use the same value",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// How repeats are dropped (`DEDUP_MODE`: `dynamodb`, the default: a claim
/// per event in `DEDUP_TABLE`; `window`: no table, the publisher drops
/// repeats within its look-back). Window dedup needs a publication window.
pub fn dedup_mode(env: &dyn Fn(&str) -> Option<String>) -> Result<DedupMode, ConfigError> {
    let mode = match var(env, "DEDUP_MODE") {
        None => DedupMode::Claims,
        Some(v) => DedupMode::parse(&v).map_err(|why| ConfigError::Invalid {
            var: "DEDUP_MODE",
            value: v.clone(),
            why,
        })?,
    };
    if mode == DedupMode::Window && window_secs(env)? == 0 {
        return Err(ConfigError::Invalid {
            var: "DEDUP_MODE",
            value: mode.name().into(),
            why: "window dedup needs PUBLISH_WINDOW_SECONDS from 60 to 900 (the publisher drops the repeats); with PUBLISH_WINDOW_SECONDS=0 use DEDUP_MODE=dynamodb".into(),
        });
    }
    Ok(mode)
}

/// The unit producers send `created_at` in (`CREATED_AT_UNIT`: `s`, the
/// default, `ms`, `us` or `ns`), applied to every event.
pub fn created_at_unit(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::core::enrich::CreatedAtUnit, ConfigError> {
    match var(env, "CREATED_AT_UNIT") {
        None => Ok(crate::core::enrich::CreatedAtUnit::S),
        Some(v) => crate::core::enrich::CreatedAtUnit::parse(&v).map_err(|_| ConfigError::Invalid {
            var: "CREATED_AT_UNIT",
            value: v.clone(),
            why: "use s (Unix seconds, the default), ms, us or ns: the unit every producer sends created_at in; it is converted to seconds exactly, then range-checked".into(),
        }),
    }
}

/// What this Lambda function does (`LAKE_FUNCTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionRole {
    /// Consume Kinesis batches (`consume`, the default).
    Consume,
    /// Publish the closed windows on a schedule (`publish`).
    Publish,
}

/// Reads `LAKE_FUNCTION`: `consume` (default) or `publish`.
pub fn function_role(env: &dyn Fn(&str) -> Option<String>) -> Result<FunctionRole, ConfigError> {
    match var(env, "LAKE_FUNCTION").as_deref().map(str::trim) {
        None | Some("consume") => Ok(FunctionRole::Consume),
        Some("publish") => Ok(FunctionRole::Publish),
        Some(other) => Err(ConfigError::Invalid {
            var: "LAKE_FUNCTION",
            value: other.into(),
            why: "use consume (Kinesis batches into staging, the default) or publish (the scheduled publisher)".into(),
        }),
    }
}

/// The publisher's settings beyond the lake: grace after a window's end
/// (`PUBLISH_GRACE_SECONDS`, default 30) and the size at which a
/// partition's file is split (`PUBLISH_TARGET_FILE_MIB`, default 128).
pub fn publish_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<(u32, u64), ConfigError> {
    let grace = match var(env, "PUBLISH_GRACE_SECONDS") {
        None => crate::core::publish::DEFAULT_GRACE_SECS,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n <= 900 => n,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "PUBLISH_GRACE_SECONDS",
                    value: v,
                    why: "0 to 900 seconds (default 30): how long after its end a window is published".into(),
                });
            }
        },
    };
    let target = match var(env, "PUBLISH_TARGET_FILE_MIB") {
        None => crate::core::publish::DEFAULT_TARGET_FILE_BYTES,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=4096).contains(&n) => n << 20,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "PUBLISH_TARGET_FILE_MIB",
                    value: v,
                    why: "1 to 4096 MiB (default 128)".into(),
                });
            }
        },
    };
    Ok((grace, target))
}

/// The table format besides the Hive-style folders (`TABLE_FORMAT`: `hive`,
/// the default, or `iceberg`; the Iceberg catalog's settings are
/// `ICEBERG_*`, read by `rest_catalog::IcebergSettings::from_env`).
pub fn table_format(env: &dyn Fn(&str) -> Option<String>) -> Result<TableFormat, ConfigError> {
    match var(env, "TABLE_FORMAT") {
        None => Ok(TableFormat::Hive),
        Some(v) => TableFormat::parse(&v).map_err(|why| ConfigError::Invalid {
            var: "TABLE_FORMAT",
            value: v,
            why,
        }),
    }
}

/// Parses a claim lifetime in hours (at least 1: longer than any writer's
/// lease, which is 20 minutes).
pub fn parse_ttl_hours(name: &'static str, v: &str) -> Result<u32, ConfigError> {
    match v.trim().parse::<u32>() {
        Ok(h) if (1..=87_600).contains(&h) => Ok(h),
        _ => Err(ConfigError::Invalid {
            var: name,
            value: v.into(),
            why: "a whole number of hours from 1 to 87600 (default 168 = 7 days); it must exceed the longest redelivery delay".into(),
        }),
    }
}

fn parse_concurrency(name: &'static str, v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var: name,
            value: v.into(),
            why: "a whole number from 1 to 1024 (default 64)".into(),
        }),
    }
}

/// Checks an S3 bucket name (3 to 63 lowercase letters, digits, `.` or `-`).
pub fn validate_bucket(name: &'static str, v: &str) -> Result<String, ConfigError> {
    let ok = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::Invalid {
            var: name,
            value: v.into(),
            why: "an S3 bucket name has 3 to 63 lowercase letters, digits, '.' or '-' (just the name, no s3:// and no key)".into(),
        })
    }
}

/// Checks a key prefix: empty, or segments without leading, trailing or
/// doubled `/`.
pub fn validate_prefix(name: &'static str, v: &str) -> Result<String, ConfigError> {
    if v.is_empty() {
        return Ok(String::new());
    }
    if v.starts_with('/') || v.ends_with('/') || v.contains("//") {
        return Err(ConfigError::Invalid {
            var: name,
            value: v.into(),
            why: format!(
                "write the prefix without leading, trailing or doubled '/', e.g. {}",
                v.split('/')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        });
    }
    Ok(v.to_string())
}

/// Checks a DynamoDB table name (3 to 255 of `A-Z a-z 0-9 _ - .`).
pub fn validate_table(name: &'static str, v: &str) -> Result<String, ConfigError> {
    let ok = (3..=255).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::Invalid {
            var: name,
            value: v.into(),
            why: "a DynamoDB table name has 3 to 255 letters, digits, '_', '-' or '.' (the name, not the ARN)".into(),
        })
    }
}

/// Splits `s3://BUCKET/PREFIX` (the prefix may be empty; a trailing `/` is
/// dropped) into a checked bucket and prefix.
pub fn parse_s3_url(name: &'static str, url: &str) -> Result<(String, String), ConfigError> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(ConfigError::Invalid {
            var: name,
            value: url.into(),
            why: "expected s3://BUCKET or s3://BUCKET/PREFIX".into(),
        });
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = validate_bucket(name, bucket)?;
    let prefix = validate_prefix(name, prefix.strip_suffix('/').unwrap_or(prefix))?;
    Ok((bucket, prefix))
}

/// Whether S3 must be addressed path-style: when its endpoint is overridden
/// (local servers do not resolve `bucket.host`).
pub fn s3_path_style(env: &dyn Fn(&str) -> Option<String>) -> bool {
    var(env, "AWS_ENDPOINT_URL_S3").is_some() || var(env, "AWS_ENDPOINT_URL").is_some()
}

/// Retries and timeouts of the SDK clients.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Attempts per request, the first included (standard retry mode:
    /// exponential backoff with jitter, throttling and transient errors only).
    pub max_attempts: u32,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Connecting to a server.
    pub connect_timeout: Duration,
    /// One DynamoDB attempt.
    pub dynamodb_attempt_timeout: Duration,
    /// One DynamoDB request, retries included.
    pub dynamodb_operation_timeout: Duration,
    /// One S3 attempt (a put of a large file included).
    pub s3_attempt_timeout: Duration,
    /// One S3 request, retries included.
    pub s3_operation_timeout: Duration,
    /// One Kinesis attempt (a `GetRecords` page of up to 10 MB included).
    pub kinesis_attempt_timeout: Duration,
    /// One Kinesis request, retries included.
    pub kinesis_operation_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            dynamodb_attempt_timeout: Duration::from_secs(5),
            dynamodb_operation_timeout: Duration::from_secs(15),
            s3_attempt_timeout: Duration::from_secs(30),
            s3_operation_timeout: Duration::from_secs(90),
            kinesis_attempt_timeout: Duration::from_secs(30),
            kinesis_operation_timeout: Duration::from_secs(90),
        }
    }
}

/// The SDK clients, built once per process.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Kinesis (replay reads failed batches back from the stream).
    pub kinesis: aws_sdk_kinesis::Client,
}

impl Clients {
    /// Loads the AWS configuration (region, credentials, endpoints) from the
    /// environment and builds the clients with `settings`.
    pub async fn load(settings: &ClientSettings) -> Result<Clients, ConfigError> {
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.max_attempts.max(1))
            .with_initial_backoff(settings.initial_backoff)
            .with_max_backoff(settings.max_backoff);
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .load()
            .await;
        if sdk.region().is_none() {
            return Err(ConfigError::Missing {
                var: "AWS_REGION",
                what: "set AWS_REGION (or a region in the AWS profile) to the region of the bucket and table",
            });
        }
        let timeouts = |attempt: Duration, operation: Duration| {
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation)
                .build()
        };
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(s3_path_style(&|k| std::env::var(k).ok()))
            .timeout_config(timeouts(
                settings.s3_attempt_timeout,
                settings.s3_operation_timeout,
            ))
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .timeout_config(timeouts(
                settings.dynamodb_attempt_timeout,
                settings.dynamodb_operation_timeout,
            ))
            .build();
        let kinesis = aws_sdk_kinesis::config::Builder::from(&sdk)
            .timeout_config(timeouts(
                settings.kinesis_attempt_timeout,
                settings.kinesis_operation_timeout,
            ))
            .build();
        Ok(Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mode(vars: &[(&str, &str)]) -> Result<LambdaMode, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LambdaMode::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn window_dedup_needs_no_table_but_a_window() {
        let vars = [("LAKE_BUCKET", "my-lake"), ("DEDUP_MODE", "window")];
        match mode(&vars).expect("no table needed") {
            LambdaMode::Aws { lake, .. } => assert_eq!(lake.table, ""),
            other => panic!("expected an AWS lake, got {other:?}"),
        }
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(dedup_mode(&env(&[])).expect("default"), DedupMode::Claims);
        assert_eq!(
            dedup_mode(&env(&[("DEDUP_MODE", "window")])).expect("window"),
            DedupMode::Window
        );
        let err = dedup_mode(&env(&[
            ("DEDUP_MODE", "window"),
            ("PUBLISH_WINDOW_SECONDS", "0"),
        ]))
        .expect_err("window dedup without a window");
        assert!(err.to_string().contains("PUBLISH_WINDOW_SECONDS"), "{err}");
        let err = dedup_mode(&env(&[("DEDUP_MODE", "none")])).expect_err("unknown");
        assert!(err.to_string().contains("DEDUP_MODE"), "{err}");
        // the claims mode still needs its table
        let err = mode(&[("LAKE_BUCKET", "my-lake")]).expect_err("no table");
        assert!(err.to_string().contains("DEDUP_TABLE"), "{err}");
    }

    #[test]
    fn bucket_and_table_with_defaults() {
        let m = mode(&[("LAKE_BUCKET", "my-lake"), ("DEDUP_TABLE", "dedup")]).expect("valid");
        assert_eq!(
            m,
            LambdaMode::Aws {
                lake: AwsLake {
                    bucket: "my-lake".into(),
                    prefix: String::new(),
                    table: "dedup".into(),
                    ttl_hours: 168,
                    io_concurrency: 64,
                },
                create_resources: false,
            }
        );
    }

    #[test]
    fn every_setting_is_read() {
        let m = mode(&[
            ("LAKE_BUCKET", "b-1"),
            ("LAKE_PREFIX", "lake/v1"),
            ("DEDUP_TABLE", "t.1"),
            ("DEDUP_TTL_HOURS", "24"),
            ("LAKE_IO_CONCURRENCY", "8"),
            ("KL_CREATE_RESOURCES", "1"),
            ("LAKE_DIR", "/ignored/when/a/bucket/is/set"),
        ])
        .expect("valid");
        let LambdaMode::Aws {
            lake,
            create_resources,
        } = m
        else {
            panic!("aws mode expected: {m:?}")
        };
        assert_eq!(lake.prefix, "lake/v1");
        assert_eq!(lake.ttl_secs(), 24 * 3600);
        assert_eq!(lake.io_concurrency, 8);
        assert!(create_resources);
        assert_eq!(lake.url(), "s3://b-1/lake/v1");
    }

    #[test]
    fn local_mode_without_a_bucket() {
        assert_eq!(
            mode(&[("LAKE_DIR", "/tmp/lake")]).expect("valid"),
            LambdaMode::Local {
                dir: "/tmp/lake".into()
            }
        );
    }

    #[test]
    fn errors_name_the_variable_and_what_to_set() {
        let e = mode(&[]).expect_err("nothing set").to_string();
        assert!(e.contains("LAKE_BUCKET") && e.contains("LAKE_DIR"), "{e}");
        let e = mode(&[("LAKE_BUCKET", "b-1")])
            .expect_err("no table")
            .to_string();
        assert!(e.contains("DEDUP_TABLE"), "{e}");
        for (var, value) in [
            ("LAKE_PREFIX", "/lake/"),
            ("DEDUP_TTL_HOURS", "0"),
            ("DEDUP_TTL_HOURS", "7d"),
            ("LAKE_IO_CONCURRENCY", "0"),
            ("KL_CREATE_RESOURCES", "yes"),
        ] {
            let e = mode(&[("LAKE_BUCKET", "b-1"), ("DEDUP_TABLE", "t-1"), (var, value)])
                .expect_err(var)
                .to_string();
            assert!(e.starts_with(var), "{e}");
        }
        let e = mode(&[("LAKE_BUCKET", "s3://b-1"), ("DEDUP_TABLE", "t-1")])
            .expect_err("url as bucket")
            .to_string();
        assert!(e.contains("no s3://"), "{e}");
        let e = validate_prefix("LAKE_PREFIX", "/a//b/").expect_err("slashes");
        assert!(e.to_string().contains("e.g. a/b"), "{e}");
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("--lake", "s3://b-1/a/b/").expect("valid"),
            ("b-1".into(), "a/b".into())
        );
        assert_eq!(
            parse_s3_url("--lake", "s3://b-1").expect("valid"),
            ("b-1".into(), String::new())
        );
        assert!(parse_s3_url("--lake", "s3://B/x").is_err());
        assert!(parse_s3_url("--lake", "http://b/x").is_err());
    }

    #[test]
    fn path_style_with_an_endpoint_override() {
        assert!(s3_path_style(
            &|k| (k == "AWS_ENDPOINT_URL_S3").then(|| "http://127.0.0.1:1".to_string())
        ));
        assert!(s3_path_style(
            &|k| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:1".to_string())
        ));
        assert!(!s3_path_style(&|_| None));
    }

    #[test]
    fn created_at_unit_defaults_to_seconds_and_refuses_typos() {
        use crate::core::enrich::CreatedAtUnit;
        assert_eq!(
            created_at_unit(&|_| None).expect("default"),
            CreatedAtUnit::S
        );
        let ms = |k: &str| (k == "CREATED_AT_UNIT").then(|| "ms".to_string());
        assert_eq!(created_at_unit(&ms).expect("ms"), CreatedAtUnit::Ms);
        let typo = |k: &str| (k == "CREATED_AT_UNIT").then(|| "millis".to_string());
        let err = created_at_unit(&typo).expect_err("typo").to_string();
        assert!(
            err.contains("CREATED_AT_UNIT") && err.contains("ms"),
            "{err}"
        );
    }

    #[test]
    fn payload_json_is_off_unless_asked_and_refuses_typos() {
        let none = |_: &str| None;
        assert!(!payload_json(&none).expect("default"));
        let on = |k: &str| (k == "LAKE_PAYLOAD_JSON").then(|| "1".to_string());
        assert!(payload_json(&on).expect("on"));
        let typo = |k: &str| (k == "LAKE_PAYLOAD_JSON").then(|| "yes".to_string());
        let err = payload_json(&typo).expect_err("typo");
        assert!(err.to_string().contains("LAKE_PAYLOAD_JSON"), "{err}");
    }

    #[test]
    fn compression_defaults_to_zstd_and_names_the_choices() {
        use crate::core::parquet_file::Codec;
        assert_eq!(compression(&|_| None).expect("default"), Codec::Zstd(1));
        let auto = |k: &str| (k == "LAKE_COMPRESSION").then(|| "auto".to_string());
        assert_eq!(compression(&auto).expect("auto"), Codec::AUTO);
        let snappy = |k: &str| (k == "LAKE_COMPRESSION").then(|| "snappy".to_string());
        assert_eq!(compression(&snappy).expect("snappy"), Codec::Snappy);
        let typo = |k: &str| (k == "LAKE_COMPRESSION").then(|| "lz4".to_string());
        let err = compression(&typo)
            .expect_err("lz4 is not offered")
            .to_string();
        assert!(
            err.contains("LAKE_COMPRESSION") && err.contains("snappy"),
            "{err}"
        );
    }
}
