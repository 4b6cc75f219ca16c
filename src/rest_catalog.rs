//! The Iceberg REST catalog adapter: the table's catalog as a service (AWS
//! Glue's and Amazon S3 Tables' Iceberg endpoints, signed with SigV4; any
//! other Iceberg REST server, with OAuth client credentials or none).
//! Settings come from the CLI's flags or the function's environment.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::core::iceberg::commit::{
    Catalog, CatalogChoice, CatalogError, CommitOutcome, IcebergTable, Loaded, NewTable,
};
use crate::core::iceberg::table::{Commit, create_request};

/// Where the Iceberg table's catalog is, and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct IcebergSettings {
    /// The REST catalog's URL (`None`: the catalog in the lake).
    pub rest_uri: Option<String>,
    /// The warehouse (Glue: the account id; S3 Tables: the table bucket's
    /// ARN; other servers: what they expect, `s3://bucket` often).
    pub warehouse: Option<String>,
    /// The namespace (Glue: the database).
    pub namespace: String,
    /// The table's name.
    pub table: String,
    /// OAuth client credentials, `id:secret`.
    pub credential: Option<String>,
    /// Sign requests with SigV4 for this service (`glue`, `s3tables`).
    pub sigv4_service: Option<String>,
}

/// Default namespace of the table.
pub const DEFAULT_NAMESPACE: &str = "kinesis_lake";
/// Default table name.
pub const DEFAULT_TABLE: &str = "events";

impl IcebergSettings {
    /// The settings from the function's environment: `ICEBERG_REST_URI`,
    /// `ICEBERG_WAREHOUSE`, `ICEBERG_NAMESPACE`, `ICEBERG_TABLE`,
    /// `ICEBERG_CREDENTIAL`, `ICEBERG_SIGV4_SERVICE`.
    pub fn from_env() -> IcebergSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        IcebergSettings {
            rest_uri: var("ICEBERG_REST_URI"),
            warehouse: var("ICEBERG_WAREHOUSE"),
            namespace: var("ICEBERG_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            table: var("ICEBERG_TABLE").unwrap_or_else(|| DEFAULT_TABLE.into()),
            credential: var("ICEBERG_CREDENTIAL"),
            sigv4_service: var("ICEBERG_SIGV4_SERVICE"),
        }
    }

    /// The publisher's table for these settings.
    pub async fn table(
        &self,
        payload_json: bool,
        target_file_bytes: u64,
    ) -> Result<IcebergTable, String> {
        let catalog = match &self.rest_uri {
            None => CatalogChoice::Lake,
            Some(uri) => {
                let signer = match &self.sigv4_service {
                    Some(service) => Some(Signer::new(service).await),
                    None => None,
                };
                CatalogChoice::External(Arc::new(RestCatalog::new(uri, self, signer)?))
            }
        };
        Ok(IcebergTable {
            catalog,
            payload_json,
            target_file_bytes,
        })
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A table in an Iceberg REST catalog.
pub struct RestCatalog {
    uri: String,
    warehouse: Option<String>,
    namespace: String,
    table: String,
    credential: Option<String>,
    signer: Option<Signer>,
    http: HttpsClient,
    /// The path prefix the server's config names, and the OAuth token.
    session: Mutex<Option<(String, Option<String>)>>,
}

/// SigV4 signing of catalog requests with the AWS SDK's credentials.
pub struct Signer {
    service: String,
    config: aws_config::SdkConfig,
}

impl Signer {
    async fn new(service: &str) -> Signer {
        Signer {
            service: service.to_string(),
            config: aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        }
    }

    async fn sign(&self, req: &mut http::Request<Full<Bytes>>, body: &[u8]) -> Result<(), String> {
        use aws_credential_types::provider::ProvideCredentials as _;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let provider = self
            .config
            .credentials_provider()
            .ok_or("no AWS credentials are configured")?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        let region = self
            .config
            .region()
            .map_or("us-east-1".to_string(), |r| r.to_string());
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name(&self.service)
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

/// An HTTP answer: status and body.
struct Answer {
    status: u16,
    body: Json,
}

/// How long one catalog request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl RestCatalog {
    /// The table `settings` names in the catalog at `uri`.
    pub fn new(
        uri: &str,
        settings: &IcebergSettings,
        signer: Option<Signer>,
    ) -> Result<RestCatalog, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("no TLS root certificates on this system to reach {uri}: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(RestCatalog {
            uri: uri.trim_end_matches('/').to_string(),
            warehouse: settings.warehouse.clone(),
            namespace: settings.namespace.clone(),
            table: settings.table.clone(),
            credential: settings.credential.clone(),
            signer,
            http: Client::builder(TokioExecutor::new()).build(https),
            session: Mutex::new(None),
        })
    }

    fn err(&self, operation: &'static str, message: impl Into<String>) -> CatalogError {
        CatalogError {
            catalog: format!("{} table {}.{}", self.uri, self.namespace, self.table),
            operation,
            message: message.into(),
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        token: Option<&str>,
    ) -> Result<Answer, String> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept", "application/json");
        if let Some(t) = token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        if !bytes.is_empty() {
            builder = builder.header("Content-Type", content_type);
        }
        let mut req = builder
            .body(Full::new(Bytes::from(bytes.clone())))
            .map_err(|e| format!("building the request: {e}"))?;
        if let Some(s) = &self.signer {
            s.sign(&mut req, &bytes).await?;
        }
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| format!("{method} {url}: no answer in {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {url}: {e} (is the catalog reachable?)"))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into_owned()));
        Ok(Answer { status, body })
    }

    /// A catalog request to `path` (after the server's `v1/<prefix>`), with a
    /// JSON body or none; `operation` names the call in errors. A token that
    /// expired (a warm function outlives it) is asked for again, once.
    async fn call(
        &self,
        operation: &'static str,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Answer, CatalogError> {
        let first = self.call_once(method, path, body).await;
        let expired = matches!(&first, Ok(a) if matches!(a.status, 401 | 419));
        let answer = if expired && self.credential.is_some() {
            *self.session.lock().await = None;
            self.call_once(method, path, body).await
        } else {
            first
        };
        answer.map_err(|m| self.err(operation, m))
    }

    async fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Answer, String> {
        let (prefix, token) = self.session().await?;
        let url = format!("{}/v1/{prefix}{path}", self.uri);
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.send(method, &url, body, token.as_deref()).await
    }

    /// The server's path prefix and a token, asked for once.
    async fn session(&self) -> Result<(String, Option<String>), String> {
        let mut s = self.session.lock().await;
        if let Some(v) = s.as_ref() {
            return Ok(v.clone());
        }
        let token = match &self.credential {
            Some(c) => {
                let (id, secret) = c.split_once(':').unwrap_or(("", c.as_str()));
                let form = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}&scope=catalog",
                    percent_encode(id),
                    percent_encode(secret)
                );
                let a = self
                    .send(
                        "POST",
                        &format!("{}/v1/oauth/tokens", self.uri),
                        Some(("application/x-www-form-urlencoded", form.into_bytes())),
                        None,
                    )
                    .await?;
                let token = a.body.get("access_token").and_then(Json::as_str);
                Some(
                    token
                        .ok_or_else(|| {
                            format!("the catalog gave no token ({}): {}", a.status, a.body)
                        })?
                        .to_string(),
                )
            }
            None => None,
        };
        let mut url = format!("{}/v1/config", self.uri);
        if let Some(w) = &self.warehouse {
            url = format!("{url}?warehouse={}", percent_encode(w));
        }
        let a = self.send("GET", &url, None, token.as_deref()).await?;
        if a.status != 200 {
            return Err(format!("GET {url}: {} {}", a.status, a.body));
        }
        let prefix = a
            .body
            .pointer("/overrides/prefix")
            .or_else(|| a.body.pointer("/defaults/prefix"))
            .and_then(Json::as_str)
            .map_or_else(String::new, |p| format!("{}/", percent_encode(p)));
        let v = (prefix, token);
        *s = Some(v.clone());
        Ok(v)
    }

    /// The path of the namespace's tables.
    fn tables_path(&self) -> String {
        format!("namespaces/{}/tables", percent_encode(&self.namespace))
    }

    /// The path of the table.
    fn table_path(&self) -> String {
        format!("{}/{}", self.tables_path(), percent_encode(&self.table))
    }

    async fn loaded(&self, operation: &'static str, a: Answer) -> Result<Loaded, CatalogError> {
        let location = a
            .body
            .get("metadata-location")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let metadata = a.body.get("metadata").cloned().ok_or_else(|| {
            self.err(operation, format!("an answer without metadata: {}", a.body))
        })?;
        Ok(Loaded {
            metadata,
            metadata_location: location,
        })
    }
}

/// Percent-encodes a form value, a query value or a path segment: all but
/// the unreserved characters, so one encoding serves the three.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Catalog for RestCatalog {
    fn describe(&self) -> String {
        format!(
            "the REST catalog {}, table {}.{}",
            self.uri, self.namespace, self.table
        )
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<Loaded>, CatalogError>> {
        Box::pin(async move {
            let a = self.call("load", "GET", &self.table_path(), None).await?;
            match a.status {
                200 => Ok(Some(self.loaded("load", a).await?)),
                404 => Ok(None),
                s => Err(self.err("load", format!("{s}: {}", a.body))),
            }
        })
    }

    fn create(&self, table: NewTable) -> BoxFuture<'_, Result<Loaded, CatalogError>> {
        Box::pin(async move {
            let ns = json!({ "namespace": [self.namespace], "properties": {} });
            let a = self.call("create", "POST", "namespaces", Some(&ns)).await?;
            if !matches!(a.status, 200 | 201 | 204 | 409) {
                return Err(self.err(
                    "create",
                    format!(
                        "creating namespace {}: {} {}",
                        self.namespace, a.status, a.body
                    ),
                ));
            }
            // at the lake's location; a catalog that manages locations (S3
            // Tables) refuses one: then at the location it chooses
            let mut a = Answer {
                status: 400,
                body: Json::Null,
            };
            for location in [Some(table.location.as_str()), None] {
                let req = create_request(&self.table, location, &table.fields, &table.properties);
                a = self
                    .call("create", "POST", &self.tables_path(), Some(&req))
                    .await?;
                let refused =
                    matches!(a.status, 400 | 403 | 422) && a.body.to_string().contains("location");
                if !refused {
                    break;
                }
                tracing::info!(catalog = %self.uri, answer = %a.body, "the catalog refused the lake's location; it chooses the table's");
            }
            match a.status {
                200 | 201 => self.loaded("create", a).await,
                // another publisher created it first
                409 => self.load().await?.ok_or_else(|| {
                    self.err("create", "the table exists (409) but cannot be loaded")
                }),
                s => Err(self.err("create", format!("{s}: {}", a.body))),
            }
        })
    }

    fn commit<'a>(
        &'a self,
        _current: &'a Loaded,
        commit: &'a Commit,
    ) -> BoxFuture<'a, Result<CommitOutcome, CatalogError>> {
        Box::pin(async move {
            let body = json!({
                "identifier": { "namespace": [self.namespace], "name": self.table },
                "requirements": commit.requirements,
                "updates": commit.updates,
            });
            let a = self
                .call("commit", "POST", &self.table_path(), Some(&body))
                .await?;
            match a.status {
                200 => Ok(CommitOutcome::Committed),
                409 => Ok(CommitOutcome::Conflict(a.body.to_string())),
                // unknown state (500, 502, 504): the next attempt loads the
                // table and finds the snapshot if it landed
                s @ (500 | 502 | 503 | 504) => Ok(CommitOutcome::Conflict(format!(
                    "state unknown ({s}): {}",
                    a.body
                ))),
                s => Err(self.err("commit", format!("{s}: {}", a.body))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(
            percent_encode("arn:aws:s3tables:us-east-1:1:bucket/b"),
            "arn%3Aaws%3As3tables%3Aus-east-1%3A1%3Abucket%2Fb"
        );
        assert_eq!(percent_encode("a b+c"), "a%20b%2Bc");
    }
}
