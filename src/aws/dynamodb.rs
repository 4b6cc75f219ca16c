//! The DynamoDB dedup store: the only code that talks to DynamoDB.
//!
//! One item per claimed `event_uuid` (partition key, S):
//! `owner` (S, the claiming record), `object_key` (S, its destination file),
//! `claimed_at` (N, Unix s) and `expires_at` (N, Unix s = claimed_at + TTL; the
//! table's TTL attribute).
//!
//! - claim: PutItem if `attribute_not_exists(event_uuid) OR expires_at < :now`;
//! - transfer: PutItem if the item is still as read (`owner` and `object_key`
//!   unchanged), or gone or expired.
//!
//! Both ask for `ReturnValuesOnConditionCheckFailure=ALL_OLD`, so a failed
//! condition answers with the current holder in the same round trip: a
//! [`ClaimOutcome::Held`], never an error. Any other failure leaves the outcome
//! unknown (the pipeline then keeps the destination file unwritten).
//!
//! The dedup window: once a claim has expired (after `DEDUP_TTL_HOURS`), a
//! re-send of its event is claimed anew and written again. DynamoDB deletes
//! expired items lazily; the conditions treat them as absent at once.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use futures::StreamExt as _;

use crate::aws::classify;
use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, Holder, StoreError, Transfer};

const UUID: &str = "event_uuid";
const OWNER: &str = "owner";
const KEY: &str = "object_key";
const CLAIMED_AT: &str = "claimed_at";
const EXPIRES_AT: &str = "expires_at";

const CLAIM_CONDITION: &str = "attribute_not_exists(#uuid) OR #exp < :now";
const TRANSFER_CONDITION: &str =
    "attribute_not_exists(#uuid) OR #exp < :now OR (#owner = :from_owner AND #key = :from_key)";

/// How often a conditional put is re-tried when its condition failed but the
/// item was gone by the time it was read (expired and deleted in between).
const VANISHED_RETRIES: usize = 3;

/// Dedup claims in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    ttl_secs: i64,
    concurrency: usize,
}

fn store_err(operation: &'static str, message: String) -> StoreError {
    StoreError { operation, message }
}

impl DynamoStore {
    /// A store in `table`, claims living `ttl_secs`, with at most
    /// `concurrency` requests in flight.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        ttl_secs: i64,
        concurrency: usize,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            ttl_secs,
            concurrency: concurrency.max(1),
        }
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Checks that the table exists and is keyed by `event_uuid` (start-up
    /// check: reachable, credentials and policy work).
    pub async fn check(&self) -> Result<(), StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| {
                store_err(
                    "check",
                    format!(
                        "describing table {}: {}",
                        self.table,
                        classify("DynamoDB", &e)
                    ),
                )
            })?;
        let hash_key = out.table().and_then(|t| {
            t.key_schema()
                .iter()
                .find(|k| k.key_type() == &KeyType::Hash)
                .map(|k| k.attribute_name().to_string())
        });
        let range_key = out.table().is_some_and(|t| t.key_schema().len() > 1);
        if hash_key.as_deref() != Some(UUID) || range_key {
            return Err(store_err(
                "check",
                format!(
                    "table {} is keyed by {:?}; kinesis-lake needs a table whose only key is the partition key {UUID} (type S)",
                    self.table,
                    hash_key.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// Creates the table if it does not exist (on-demand, TTL on
    /// `expires_at`) and waits until it is active. For local trials and tests;
    /// production tables come from the deployment template.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        let err = |what: &str, m: String| {
            store_err("create table", format!("{what} table {}: {m}", self.table))
        };
        let attr = AttributeDefinition::builder()
            .attribute_name(UUID)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| err("defining", e.to_string()))?;
        let key = KeySchemaElement::builder()
            .attribute_name(UUID)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| err("defining", e.to_string()))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(err("creating", classify("DynamoDB", &e).message)),
        }
        // a new table is CREATING for a moment; poll until ACTIVE
        for _ in 0..200 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| err("describing", classify("DynamoDB", &e).message))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                let ttl = TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(|e| err("defining TTL of", e.to_string()))?;
                return match self
                    .client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(ttl)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // "TimeToLive is already enabled"
                    Err(e) if e.code() == Some("ValidationException") => Ok(()),
                    Err(e) => Err(err("enabling TTL on", classify("DynamoDB", &e).message)),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(err(
            "waiting for",
            "it did not become ACTIVE in 20 s".into(),
        ))
    }

    /// The current holder of a uuid (a strongly consistent read), if claimed.
    pub async fn holder(&self, event_uuid: &str) -> Result<Option<Holder>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(UUID, AttributeValue::S(event_uuid.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                store_err(
                    "read",
                    format!(
                        "GetItem of event_uuid {event_uuid} in table {}: {}",
                        self.table,
                        classify("DynamoDB", &e)
                    ),
                )
            })?;
        out.item()
            .map(|item| holder_of(&self.table, event_uuid, item))
            .transpose()
    }

    fn item(&self, c: &Claim<'_>, now: i64) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (UUID.to_string(), AttributeValue::S(c.event_uuid.into())),
            (OWNER.to_string(), AttributeValue::S(c.owner.into())),
            (KEY.to_string(), AttributeValue::S(c.object_key.into())),
            (CLAIMED_AT.to_string(), AttributeValue::N(now.to_string())),
            (
                EXPIRES_AT.to_string(),
                AttributeValue::N((now + self.ttl_secs).to_string()),
            ),
        ])
    }

    /// One conditional put of `to`: `from` is `None` for a claim, the holder
    /// as read for a transfer.
    async fn put(
        &self,
        operation: &'static str,
        to: &Claim<'_>,
        from: Option<(&str, &str)>,
        now: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        let failed = |m: String| {
            store_err(
                operation,
                format!(
                    "PutItem of event_uuid {} into table {}: {m}",
                    to.event_uuid, self.table
                ),
            )
        };
        for _ in 0..VANISHED_RETRIES {
            let mut req = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item(to, now)))
                .expression_attribute_names("#uuid", UUID)
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            req = match from {
                None => req.condition_expression(CLAIM_CONDITION),
                Some((owner, key)) => req
                    .condition_expression(TRANSFER_CONDITION)
                    .expression_attribute_names("#owner", OWNER)
                    .expression_attribute_names("#key", KEY)
                    .expression_attribute_values(":from_owner", AttributeValue::S(owner.into()))
                    .expression_attribute_values(":from_key", AttributeValue::S(key.into())),
            };
            let err = match req.send().await {
                Ok(_) => return Ok(ClaimOutcome::Claimed),
                Err(e) => e,
            };
            let Some(PutItemError::ConditionalCheckFailedException(ccf)) = err.as_service_error()
            else {
                return Err(failed(classify("DynamoDB", &err).message));
            };
            let holder = match ccf.item() {
                Some(item) => holder_of(&self.table, to.event_uuid, item)?,
                // a server that does not return the old item: read it
                None => match self.holder(to.event_uuid).await? {
                    Some(h) => h,
                    None => continue,
                },
            };
            // An SDK retry of a put whose first attempt was applied finds
            // that attempt: the claim is ours, for this very file.
            if holder.owner == to.owner && holder.object_key == to.object_key {
                return Ok(ClaimOutcome::Claimed);
            }
            return Ok(ClaimOutcome::Held(holder));
        }
        Err(failed(
            "the condition failed but the item kept vanishing (expiring); retry".into(),
        ))
    }
}

/// Reads a holder from an item.
fn holder_of(
    table: &str,
    event_uuid: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Holder, StoreError> {
    let bad = |attr: &str| {
        store_err(
            "read",
            format!(
                "the item of event_uuid {event_uuid} in table {table} has no valid {attr}; it was not written by kinesis-lake (is DEDUP_TABLE shared with something else?)"
            ),
        )
    };
    let s = |attr: &'static str| {
        item.get(attr)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| bad(attr))
    };
    let claimed_at = item
        .get(CLAIMED_AT)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| bad(CLAIMED_AT))?;
    Ok(Holder {
        owner: s(OWNER)?,
        object_key: s(KEY)?,
        claimed_at,
    })
}

impl DedupStore for DynamoStore {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        // indices, not references: a closure over `&Claim` trips the
        // compiler's Send check of the returned future
        futures::stream::iter(0..claims.len())
            .map(|i| self.put("claim", &claims[i], None, now))
            .buffered(self.concurrency)
            .collect()
            .await
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        futures::stream::iter(0..transfers.len())
            .map(|i| {
                let t = &transfers[i];
                self.put("transfer", &t.to, Some((t.from_owner, t.from_key)), now)
            })
            .buffered(self.concurrency)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_read_from_items_and_foreign_items_are_errors() {
        let item = HashMap::from([
            (UUID.to_string(), AttributeValue::S("u".into())),
            (OWNER.to_string(), AttributeValue::S("o".into())),
            (KEY.to_string(), AttributeValue::S("k".into())),
            (CLAIMED_AT.to_string(), AttributeValue::N("17".into())),
        ]);
        assert_eq!(
            holder_of("t", "u", &item).expect("valid"),
            Holder {
                owner: "o".into(),
                object_key: "k".into(),
                claimed_at: 17
            }
        );
        let mut foreign = item.clone();
        foreign.insert(CLAIMED_AT.into(), AttributeValue::S("yesterday".into()));
        let e = holder_of("t", "u", &foreign).expect_err("invalid");
        assert!(e.to_string().contains("claimed_at"), "{e}");
    }
}
