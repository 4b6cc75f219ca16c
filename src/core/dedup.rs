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
