//! What the log says about the records of a batch that could not be durably
//! handled: one line per distinct reason (a failed write names its file, so
//! that is one line per file) and one line for the batch, not one per record.

use std::collections::HashMap;

use crate::core::pipeline::{FailedRecord, Failure};
use crate::record::RawRecord;

/// Failed records that share a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup<'a> {
    /// The reason they share.
    pub reason: &'a Failure,
    /// How many records.
    pub count: usize,
    /// Where the first of them came from ([`crate::Origin::describe`]).
    pub first: String,
    /// Where the last of them came from.
    pub last: String,
}

/// Groups failed records by reason, in the order the reasons first appear.
pub fn group_failures<'a>(
    records: &[RawRecord],
    failed: &'a [FailedRecord],
) -> Vec<FailureGroup<'a>> {
    let describe = |f: &FailedRecord| {
        records
            .get(f.index)
            .map_or_else(|| format!("record {}", f.index), |r| r.origin.describe())
    };
    let mut groups: Vec<FailureGroup<'a>> = Vec::new();
    let mut by_reason: HashMap<&Failure, usize> = HashMap::new();
    for f in failed {
        match by_reason.get(&f.reason) {
            Some(&g) => {
                groups[g].count += 1;
                groups[g].last = describe(f);
            }
            None => {
                by_reason.insert(&f.reason, groups.len());
                let at = describe(f);
                groups.push(FailureGroup {
                    reason: &f.reason,
                    count: 1,
                    first: at.clone(),
                    last: at,
                });
            }
        }
    }
    groups
}

/// Logs the failed records of a batch: one WARN per distinct reason, with
/// the count and the first and last records, then one for the batch.
pub fn warn_failures(records: &[RawRecord], failed: &[FailedRecord]) {
    if failed.is_empty() {
        return;
    }
    let groups = group_failures(records, failed);
    for g in &groups {
        tracing::warn!(
            records = g.count,
            first = %g.first,
            last = %g.last,
            reason = %g.reason,
            "records not handled; they will be retried"
        );
    }
    tracing::warn!(
        failed = failed.len(),
        of = records.len(),
        reasons = groups.len(),
        "records of this batch not handled; they will be retried"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Origin;

    fn rec(line: u64) -> RawRecord {
        RawRecord::new(
            Vec::new(),
            Origin::File {
                path: "/in".into(),
                line,
            },
        )
    }

    fn write_failed(file: &str) -> Failure {
        Failure::Write {
            file: file.into(),
            why: "disk full".into(),
        }
    }

    fn failed(index: usize, file: &str) -> FailedRecord {
        FailedRecord {
            index,
            reason: write_failed(file),
        }
    }

    #[test]
    fn failures_are_grouped_by_reason_with_first_and_last_record() {
        let records: Vec<RawRecord> = (1..=5).map(rec).collect();
        let failed = [
            failed(0, "a"),
            failed(1, "b"),
            failed(2, "a"),
            failed(4, "a"),
        ];
        let groups = group_failures(&records, &failed);
        assert_eq!(
            groups,
            [
                FailureGroup {
                    reason: &write_failed("a"),
                    count: 3,
                    first: "/in:1".into(),
                    last: "/in:5".into(),
                },
                FailureGroup {
                    reason: &write_failed("b"),
                    count: 1,
                    first: "/in:2".into(),
                    last: "/in:2".into(),
                },
            ]
        );
        assert!(group_failures(&records, &[]).is_empty());
    }
}
