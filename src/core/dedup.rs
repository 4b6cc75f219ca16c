//! Dedup: the claim protocol that makes writes exactly-once, over a
//! [`DedupStore`] (DynamoDB in AWS, an embedded database locally).
//!
//! Each event's `event_uuid` is claimed with a conditional write that records
//! the claimant (the record's [`owner`](crate::record::Origin::owner)) and the
//! key of the file the event is destined for. That file's existence is the
//! commit: files are written whole and atomically, after the claims.
//!
//! When a claim finds the uuid already held, [`resolve`] decides:
//! - the held file exists: the event is in the lake, this copy is a duplicate;
//! - else the holder is this same record (an earlier attempt died before its
//!   file landed), or the claim is older than the lease (its holder died): the
//!   claim is transferred, conditionally on being unchanged, and written;
//! - else another writer is still within its lease: this copy is retried later.

use std::future::Future;

/// A store failure: the outcome of the claim is unknown.
#[derive(Debug, thiserror::Error)]
#[error("dedup store {operation} failed: {message}")]
pub struct StoreError {
    /// What was attempted (`claim`, `transfer`, `open`).
    pub operation: &'static str,
    /// The cause, with what to check.
    pub message: String,
}

/// A request to claim one `event_uuid` for a record and a destination file.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The dedup key.
    pub event_uuid: &'a str,
    /// The claiming record's stable identity.
    pub owner: &'a str,
    /// The key of the file the event will be written to.
    pub object_key: &'a str,
}

/// A request to move a claim from its current holder to a new one, only if
/// the claim is still exactly as it was read.
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    /// The dedup key.
    pub event_uuid: &'a str,
    /// The holder as read.
    pub from_owner: &'a str,
    /// The file key as read.
    pub from_key: &'a str,
    /// The new claim.
    pub to: Claim<'a>,
}

/// What a claim (or transfer) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The uuid is now ours, destined for the requested file.
    Claimed,
    /// The uuid is held (by anyone, ourselves included), as recorded.
    Held(Holder),
}

/// The recorded holder of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The record that claimed it.
    pub owner: String,
    /// The file it was destined for.
    pub object_key: String,
    /// When it was claimed, Unix seconds.
    pub claimed_at: i64,
}

/// The dedup store: conditional claims of event uuids. Implementations answer a
/// failed condition with [`ClaimOutcome::Held`], never with an error; an error
/// means the outcome is unknown.
pub trait DedupStore: Send + Sync {
    /// Claims each uuid not yet held (or whose claim has expired), returning
    /// one outcome per request, in order.
    fn claim(
        &self,
        claims: &[Claim<'_>],
        now: i64,
    ) -> impl Future<Output = Vec<Result<ClaimOutcome, StoreError>>> + Send;

    /// Transfers each claim if it is still held as read, returning one outcome
    /// per request, in order.
    fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> impl Future<Output = Vec<Result<ClaimOutcome, StoreError>>> + Send;
}

/// What to do with an event whose claim is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It is in the lake already.
    Duplicate,
    /// Take the claim over, then write it.
    Transfer,
    /// Another writer may still commit it: fail this record, retry later.
    RetryLater,
}

/// Decides about a held claim, given whether the holder's file exists.
pub fn resolve(
    holder: &Holder,
    my_owner: &str,
    holder_file_exists: bool,
    now: i64,
    lease_secs: i64,
) -> Resolution {
    if holder_file_exists {
        Resolution::Duplicate
    } else if holder.owner == my_owner || now - holder.claimed_at >= lease_secs {
        Resolution::Transfer
    } else {
        Resolution::RetryLater
    }
}

/// How repeats of an `event_uuid` are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DedupMode {
    /// Every event is claimed in a [`DedupStore`] (DynamoDB for an S3 lake,
    /// the embedded store for a folder lake) before it is written: a repeat
    /// is dropped for as long as its claim lives (7 days by default), one
    /// store write per event.
    #[default]
    Claims,
    /// No store: a batch's staging object is named from its records alone, so a
    /// retry of the same records stages nothing new, and the publisher drops
    /// repeats within a window and against the uuids it published in its
    /// look-back (1 hour by default). A repeat arriving later is written
    /// again. Needs a publication window.
    Window,
}

impl DedupMode {
    /// Parses `dynamodb` (claims in the dedup store) or `window`.
    pub fn parse(s: &str) -> Result<DedupMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dynamodb" => Ok(DedupMode::Claims),
            "window" => Ok(DedupMode::Window),
            other => Err(format!(
                "unknown dedup mode {other:?}: use dynamodb (claims in the dedup store: the DynamoDB table, or a folder lake's embedded store; repeats dropped for the claims' lifetime, 7 days by default) or window (no store: retries and repeats within the publisher's 1-hour look-back dropped)"
            )),
        }
    }

    /// The mode's name as the CLI and `DEDUP_MODE` spell it.
    pub fn name(self) -> &'static str {
        match self {
            DedupMode::Claims => "dynamodb",
            DedupMode::Window => "window",
        }
    }
}

impl std::fmt::Display for DedupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The store of [`DedupMode::Window`]: grants every claim and keeps nothing
/// (the pipeline names staging objects from their records instead, and the
/// publisher drops repeats).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClaims;

impl DedupStore for NoClaims {
    async fn claim(
        &self,
        claims: &[Claim<'_>],
        _now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        claims.iter().map(|_| Ok(ClaimOutcome::Claimed)).collect()
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        _now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        transfers
            .iter()
            .map(|_| Ok(ClaimOutcome::Claimed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(owner: &str, at: i64) -> Holder {
        Holder {
            owner: owner.into(),
            object_key: "k".into(),
            claimed_at: at,
        }
    }

    #[test]
    fn dedup_modes_parse_by_their_names_only() {
        for mode in [DedupMode::Claims, DedupMode::Window] {
            assert_eq!(DedupMode::parse(mode.name()), Ok(mode));
        }
        assert_eq!(DedupMode::parse(" Window "), Ok(DedupMode::Window));
        let err = DedupMode::parse("firehose").expect_err("unknown");
        assert!(err.contains("dynamodb") && err.contains("window"), "{err}");
    }

    #[test]
    fn an_existing_file_means_duplicate_whoever_holds_it() {
        assert_eq!(
            resolve(&holder("me", 0), "me", true, 10, 900),
            Resolution::Duplicate
        );
        assert_eq!(
            resolve(&holder("other", 0), "me", true, 10, 900),
            Resolution::Duplicate
        );
    }

    #[test]
    fn my_own_lost_write_is_taken_over_at_once() {
        assert_eq!(
            resolve(&holder("me", 5), "me", false, 6, 900),
            Resolution::Transfer
        );
    }

    #[test]
    fn another_writer_keeps_its_claim_until_the_lease_ends() {
        assert_eq!(
            resolve(&holder("other", 100), "me", false, 999, 900),
            Resolution::RetryLater
        );
        assert_eq!(
            resolve(&holder("other", 100), "me", false, 1000, 900),
            Resolution::Transfer
        );
    }
}
