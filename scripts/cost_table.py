#!/usr/bin/env python3
"""The monthly bill of each mode, from the request counts tests/cost.rs measured.

    python3 scripts/cost_table.py [target/cost-report.json]

Prints the README's table of modes and docs/DEPLOY.md's breakdown. Every
count comes from the report (S3 requests by kind per consumer invocation and
per publisher hour, DynamoDB writes per event, staged and Parquet bytes per
event); every price is a us-east-1 list price at the time of writing (the
same as docs/DEPLOY.md's); every other number is an assumption named below.
"""
import json
import math
import sys

HOURS = 730  # per month
# --- list prices (us-east-1) ---
S3_PUT = 0.005 / 1000        # PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1000       # GET, HEAD and the rest
S3_GB_MONTH = 0.023
DDB_WRU = 0.625 / 1e6        # on demand
DDB_WCU_HOUR = 0.00065       # provisioned
DDB_RCU_HOUR = 0.00013
DDB_GB_MONTH = 0.25
LAMBDA_GB_S = 0.0000133334   # arm64
LAMBDA_REQ = 0.20 / 1e6
KDS_SHARD_HOUR = 0.015       # provisioned stream
KDS_PUT_UNIT = 0.014 / 1e6   # 25 KB payload units
CW_FIXED = 6.70              # EMF metrics (20 × $0.30) and 7 alarms (× $0.10)
CW_LOG_GB = 0.50
# Firehose to S3 with dynamic partitioning and Parquet conversion, per GB:
# ingestion $0.029 (Kinesis Data Streams source), format conversion $0.018,
# dynamic partitioning $0.020; and $0.005 per 1,000 objects delivered.
FIREHOSE_GB = 0.029 + 0.018 + 0.020
FIREHOSE_OBJECTS = 0.005 / 1000

# --- assumptions ---
EVENT_KB = 1.0                 # gen_events.py's events average ~1 KB
RECORDS_PER_INVOCATION = 3300  # the 6 MB payload bound (docs/DEPLOY.md)
CONSUMER_S = 3.0               # per invocation at 256 MB (docs/DEPLOY.md's assumption)
CONSUMER_GB = 0.25
PUBLISHER_GB = 2.0
PUBLISHER_MB_S = 54.0          # JSON in per second (BENCHMARKS.md, the lower bound)
PUBLISHER_RUNS_PER_HOUR = 60   # rate(1 minute)
LOG_KB_PER_INVOCATION = 2.0
TTL_HOURS = 168
CLAIM_ITEM_BYTES = 360
TARGET_UTILIZATION = 0.75      # DedupTargetUtilization
MIN_WCU = 300                  # DedupMinWriteCapacity
# StagingExpirationDays (7), then one day as a noncurrent version (the
# template's bucket is versioned; its staging rule expires those after a day)
STAGING_DAYS = 7 + 1
TARGET_FILE_BYTES = 128 << 20
RATES = {"1M": 1e6, "1B": 1e9}


def load(path):
    with open(path) as f:
        rows = json.load(f)
    return {(r["dedup"], r["window_secs"]): r for r in rows}


def per_invocation(m, kind):
    return m["consumer"][kind] / m["invocations"]


class Mode:
    """One (dedup, billing, window) combination, from the measured rows."""

    def __init__(self, rows, dedup, billing, window):
        self.dedup, self.billing, self.window = dedup, billing, window
        # the consumer's requests depend on the dedup mode, the publisher's
        # on the window only (tests/cost.rs checks both are so)
        self.consumer = rows[(dedup, 300)] if window else rows[("dynamodb", 0)]
        self.publisher = rows[("window", window)] if window else None
        base = rows[(dedup, 300)] if window else self.consumer
        self.writes_per_event = base["dynamodb_writes"] / base["events"]
        self.staged_per_event = base["consumer_put_bytes"] / base["events"] if window else 0.0
        self.parquet_per_event = base["parquet_bytes"] / base["events"]
        self.partitions = max(base["partitions"], 1)

    def monthly(self, rate):
        inv = rate / RECORDS_PER_INVOCATION
        c = {k: per_invocation(self.consumer, k) * inv for k in ("put", "get", "head", "list")}
        put, get, lst = c["put"], c["get"] + c["head"], c["list"]
        pub_compute = 0.0
        if self.publisher:
            p = self.publisher["publisher_per_hour"]
            windows_h = 3600 / self.window
            files_per_window = self.partitions * self.parts(rate)
            records_per_window = p["put"] / windows_h - self.partitions
            put += windows_h * (files_per_window + records_per_window)
            # one GET per staging object (one per invocation), the rest fixed
            get += inv + max(p["get"] - self.publisher["staging_objects_per_hour"], 0)
            staging_per_window = inv / windows_h
            lst += p["list"] * max(1, math.ceil(staging_per_window / 1000))
            json_mb_h = rate * EVENT_KB / 1024
            pub_s_h = json_mb_h / PUBLISHER_MB_S + PUBLISHER_RUNS_PER_HOUR * 0.1
            pub_compute = pub_s_h * PUBLISHER_GB * LAMBDA_GB_S * HOURS
        lines = {}
        lines["S3 PUT requests"] = put * HOURS * S3_PUT
        lines["S3 LIST requests"] = lst * HOURS * S3_PUT
        lines["S3 GET/HEAD requests"] = get * HOURS * S3_GET
        lines["DynamoDB writes"] = self.dynamodb_writes(rate)
        live = TTL_HOURS * rate * CLAIM_ITEM_BYTES / 1e9 if self.writes_per_event else 0
        lines["DynamoDB storage"] = live * DDB_GB_MONTH
        runs = PUBLISHER_RUNS_PER_HOUR * HOURS if self.publisher else 0
        lines["Lambda"] = (inv * HOURS * (CONSUMER_S * CONSUMER_GB * LAMBDA_GB_S + LAMBDA_REQ)
                           + runs * LAMBDA_REQ + pub_compute)
        staged_gb = rate * 24 * STAGING_DAYS * self.staged_per_event / 1e9
        lines["S3 staging storage"] = staged_gb * S3_GB_MONTH
        logs_gb = inv * HOURS * LOG_KB_PER_INVOCATION / 1e6
        lines["CloudWatch"] = CW_FIXED + logs_gb * CW_LOG_GB
        shards = max(2, math.ceil(rate / 3600 / 1000 * 1.2))
        lines["Kinesis (provisioned)"] = (shards * HOURS * KDS_SHARD_HOUR
                                          + rate * HOURS * KDS_PUT_UNIT)
        lines["_s3_puts_per_month"] = put * HOURS
        lines["_files_per_partition_hour"] = (3600 / self.window * self.parts(rate)
                                              if self.window else inv)
        return lines

    def parts(self, rate):
        if not self.window:
            return 1
        share = rate * self.window / 3600 / self.partitions * self.parquet_per_event
        return max(1, math.ceil(share / TARGET_FILE_BYTES))

    def dynamodb_writes(self, rate):
        writes_h = rate * self.writes_per_event
        if not writes_h:
            return 0.0
        if self.billing == "on-demand":
            return writes_h * HOURS * DDB_WRU
        wcu = max(MIN_WCU, writes_h / 3600 / TARGET_UTILIZATION)
        return wcu * HOURS * DDB_WCU_HOUR + 5 * HOURS * DDB_RCU_HOUR


def total(lines, with_stream=True):
    return sum(v for k, v in lines.items()
               if not k.startswith("_") and (with_stream or not k.startswith("Kinesis")))


def firehose_monthly(rate, partitions=100, buffer_s=300):
    gb = rate * EVENT_KB / 1024 / 1024 * HOURS
    objects = partitions * 3600 / buffer_s * HOURS
    return gb * FIREHOSE_GB + objects * (FIREHOSE_OBJECTS + S3_PUT)


def money(v):
    return f"${v:,.0f}" if v >= 100 else f"${v:,.2f}"


def main():
    rows = load(sys.argv[1] if len(sys.argv) > 1 else "target/cost-report.json")
    modes = []
    for window in (0, 60, 300, 900):
        modes.append(Mode(rows, "dynamodb", "on-demand", window))
        modes.append(Mode(rows, "dynamodb", "provisioned", window))
        if window:
            modes.append(Mode(rows, "window", "-", window))
    print("| dedup | billing | window | freshness | files per partition per hour (1M / 1B) "
          "| month at 1M events/h | per million events, without the stream | month at 1B events/h |")
    print("|---|---|---|---|---|---|---|---|")
    for m in modes:
        a, b = m.monthly(RATES["1M"]), m.monthly(RATES["1B"])
        per_m = total(a, with_stream=False) / (RATES["1M"] * HOURS / 1e6)
        fresh = (f"≤ {(m.window + 30 + 60) / 60:g} min" if m.window
                 else "the batching window (s)")
        print(f"| {m.dedup} | {m.billing} | {m.window} s | {fresh} "
              f"| {a['_files_per_partition_hour']:,.0f} / {b['_files_per_partition_hour']:,.0f} "
              f"| {money(total(a))} | ${per_m:.3f} | {money(total(b))} |")
    print("\nFirehose from the same stream (dynamic partitioning + Parquet), without the stream:")
    for buffer_s in (60, 300, 900):
        fh = firehose_monthly(RATES["1M"], buffer_s=buffer_s)
        print(f"- {buffer_s} s buffer: {money(fh)} a month at 1M events/h, "
              f"${fh / (RATES['1M'] * HOURS / 1e6):.3f} per million events")
    print("\nBreakdown at 1M events/hour, window 300 s:\n")
    picks = [m for m in modes if m.window == 300]
    names = [k for k in picks[0].monthly(RATES["1M"]) if not k.startswith("_")]
    print("| line | " + " | ".join(f"{m.dedup} {m.billing}".replace(" -", "") for m in picks) + " |")
    print("|---|" + "---|" * len(picks))
    for n in names:
        print(f"| {n} | " + " | ".join(money(m.monthly(RATES["1M"])[n]) for m in picks) + " |")
    print("| total | " + " | ".join(money(total(m.monthly(RATES["1M"]))) for m in picks) + " |")
    print()
    direct = Mode(rows, "dynamodb", "on-demand", 0).monthly(RATES["1M"])
    for m in picks:
        a = m.monthly(RATES["1M"])
        print(f"{m.dedup} {m.billing}: S3 PUTs {a['_s3_puts_per_month'] / 1e6:.2f} M/month, "
              f"{direct['_s3_puts_per_month'] / a['_s3_puts_per_month']:.1f}x fewer than direct writes "
              f"({direct['_s3_puts_per_month'] / 1e6:.2f} M)")


if __name__ == "__main__":
    main()
