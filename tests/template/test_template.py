"""Guards on template.yaml: the properties an operator relies on.

Each test pins one property of the SAM template (exactly-once plumbing,
poison-batch handling, encryption, least privilege, Athena projection, ...)
so that it cannot silently disappear in a later edit. The last test runs
cfn-lint on the template and requires a clean result (no errors, no warnings).

Only pytest is needed, plus either cfn-lint (whose own YAML loader
understands the CloudFormation short-form tags !Ref, !Sub, !GetAtt, ...) or
PyYAML (cfn-lint depends on it, so it is always there when cfn-lint is).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _load_with_pyyaml(text: str) -> dict:
    """Fallback loader: PyYAML plus a constructor for CloudFormation tags."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
            elif suffix == "Condition":
                return {"Condition": value}
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CfnLoader.add_multi_constructor("!", construct_tag)
    return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def load_template() -> dict:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    try:
        from cfnlint.decode import cfn_yaml
    except ImportError:
        data = _load_with_pyyaml(text)
    else:
        data = cfn_yaml.loads(text, str(TEMPLATE_PATH))
    # Normalise cfn-lint's node classes (and anything else) to plain JSON types.
    return json.loads(json.dumps(data))


@pytest.fixture(scope="module")
def tpl() -> dict:
    assert TEMPLATE_PATH.is_file(), f"{TEMPLATE_PATH.name} missing at the repository root"
    return load_template()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def resources(tpl: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in tpl["Resources"].items() if v.get("Type") == rtype}


def only_resource(tpl: dict, rtype: str) -> tuple[str, dict]:
    found = resources(tpl, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
    return next(iter(found.items()))


def props(resource: dict) -> dict:
    return resource.get("Properties", {})


def param_or_literal(tpl: dict, value: Any) -> tuple[Any, dict | None]:
    """Resolve {"Ref": Param} to (Default, parameter definition)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        params = tpl.get("Parameters", {})
        assert name in params, f"Ref to unknown parameter {name}"
        return params[name].get("Default"), params[name]
    return value, None


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def is_ref_to(value: Any, logical_id: str) -> bool:
    return value == {"Ref": logical_id}


def is_getatt(value: Any, logical_id: str, attr: str) -> bool:
    return value == {"Fn::GetAtt": [logical_id, attr]}


def strings_in(node: Any) -> Iterator[str]:
    """Every string anywhere in a (possibly intrinsic) value."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings_in(v)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def event_source_mapping(tpl: dict) -> dict:
    _, esm = only_resource(tpl, "AWS::Lambda::EventSourceMapping")
    return props(esm)


def lake_bucket(tpl: dict) -> tuple[str, dict]:
    """The lake's bucket: the one the consumer's LAKE_BUCKET names."""
    _, fn = the_function(tpl)
    ref = props(fn)["Environment"]["Variables"]["LAKE_BUCKET"]
    buckets = resources(tpl, "AWS::S3::Bucket")
    found = [(bid, b) for bid, b in buckets.items() if is_ref_to(ref, bid)]
    assert len(found) == 1, f"LAKE_BUCKET must name a bucket of this stack, not {ref}"
    return found[0]


def failed_batch_bucket(tpl: dict) -> tuple[str, dict]:
    """The on-failure destination's bucket (GetAtt Arn of a bucket of this stack)."""
    dest = event_source_mapping(tpl)["DestinationConfig"]["OnFailure"]["Destination"]
    assert isinstance(dest, dict) and "Fn::GetAtt" in dest, "OnFailure must point at a bucket of this stack"
    bid, attr = dest["Fn::GetAtt"]
    assert attr == "Arn", dest
    bucket = tpl["Resources"][bid]
    assert bucket["Type"] == "AWS::S3::Bucket", f"the on-failure destination {bid} is a {bucket['Type']}"
    return bid, bucket


def the_function(tpl: dict) -> tuple[str, dict]:
    """The consumer: the function the Kinesis event source mapping invokes."""
    target = event_source_mapping(tpl)["FunctionName"]
    fns = resources(tpl, "AWS::Serverless::Function")
    found = [(fid, fn) for fid, fn in fns.items() if is_ref_to(target, fid)]
    assert len(found) == 1, f"the mapping must invoke a function of this stack, not {target}"
    return found[0]


def the_publisher(tpl: dict) -> tuple[str, dict]:
    """The publisher: the function run with LAKE_FUNCTION=publish."""
    found = [
        (fid, fn)
        for fid, fn in resources(tpl, "AWS::Serverless::Function").items()
        if props(fn).get("Environment", {}).get("Variables", {}).get("LAKE_FUNCTION") == "publish"
    ]
    assert len(found) == 1, f"expected exactly one function with LAKE_FUNCTION=publish, found {[f for f, _ in found]}"
    return found[0]


def role_of(tpl: dict, fn: dict) -> str:
    role_id, attr = props(fn)["Role"]["Fn::GetAtt"]
    assert attr == "Arn" and tpl["Resources"][role_id]["Type"] == "AWS::IAM::Role"
    return role_id


def granted_actions(tpl: dict, role_id: str) -> dict[str, list]:
    """Action -> the Allow statements of the role's inline policies granting it."""
    granted: dict[str, list] = {}
    for lid, st in policy_statements(tpl):
        if lid == role_id and st["Effect"] == "Allow":
            for action in as_list(st["Action"]):
                granted.setdefault(action, []).append(st)
    return granted


def lake_object_arn(tpl: dict, resource: Any) -> str:
    """The "<LakePrefix>/..." part of a publisher ARN of the form
    Sub ["${Bucket.Arn}/${Dir}<path>", {Dir: If [HasLakePrefix, "<prefix>/", ""]}],
    as "${Dir}<path>", after checking Dir follows the LAKE_PREFIX contract."""
    bucket_id, _ = lake_bucket(tpl)
    sub = resource["Fn::Sub"]
    assert isinstance(sub, list), resource
    text, variables = sub
    assert variables == {"Dir": {"Fn::If": ["HasLakePrefix", {"Fn::Sub": "${LakePrefix}/"}, ""]}}, variables
    head = f"${{{bucket_id}.Arn}}/"
    assert text.startswith(head + "${Dir}"), text
    return text[len(head):]


ALARM_TOPIC = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}


def alarms_on(tpl: dict, fid: str) -> dict[tuple[str, str], dict]:
    """(Namespace, MetricName) -> the properties of the alarm on function `fid`."""
    found: dict[tuple[str, str], dict] = {}
    for a in resources(tpl, "AWS::CloudWatch::Alarm").values():
        p = props(a)
        if {"Name": "FunctionName", "Value": {"Ref": fid}} in p.get("Dimensions", []):
            key = (p["Namespace"], p["MetricName"])
            assert key not in found, f"two alarms on {key} of {fid}"
            found[key] = p
    return found


def condition_is_lake_prefix_nonempty(tpl: dict, name: str) -> bool:
    cond = tpl.get("Conditions", {}).get(name)
    return cond == {"Fn::Not": [{"Fn::Equals": [{"Ref": "LakePrefix"}, ""]}]}


# --------------------------------------------------------------------------
# Deploying with given parameter values: conditions and rules
# --------------------------------------------------------------------------

NO_VALUE = {"Ref": "AWS::NoValue"}


def parameter_values(tpl: dict, overrides: dict[str, Any]) -> dict[str, str]:
    """Every parameter's value as CloudFormation compares it (a string): the
    Default unless overridden."""
    params = tpl["Parameters"]
    unknown = set(overrides) - set(params)
    assert not unknown, f"no such parameters: {sorted(unknown)}"
    values = {name: p.get("Default") for name, p in params.items()}
    values.update(overrides)
    missing = [name for name, v in values.items() if v is None]
    assert not missing, f"parameters without a value: {missing}"
    return {name: str(v) for name, v in values.items()}


def truth(tpl: dict, values: dict[str, str], node: Any) -> bool:
    """A condition (or a rule's condition or assertion) for these parameter
    values: Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Contains, Condition."""

    def value(x: Any) -> str:
        if isinstance(x, dict):
            assert set(x) == {"Ref"}, f"cannot evaluate {x}"
            assert x["Ref"] in values, f"Ref to unknown parameter {x['Ref']}"
            return values[x["Ref"]]
        return str(x)

    assert isinstance(node, dict) and len(node) == 1, node
    ((fn, args),) = node.items()
    if fn == "Condition":
        return truth(tpl, values, tpl["Conditions"][args])
    if fn == "Fn::Equals":
        a, b = args
        return value(a) == value(b)
    if fn == "Fn::Not":
        (c,) = args
        return not truth(tpl, values, c)
    if fn == "Fn::And":
        return all(truth(tpl, values, c) for c in args)
    if fn == "Fn::Or":
        return any(truth(tpl, values, c) for c in args)
    if fn == "Fn::Contains":
        items, x = args
        return value(x) in [value(i) for i in items]
    raise AssertionError(f"cannot evaluate {fn}")


def deploy(tpl: dict, **overrides: Any) -> dict:
    """The template as CloudFormation deploys it with these parameter values
    (the others at their defaults): resources and outputs whose Condition is
    false are gone, every Fn::If is replaced by the branch it takes and
    AWS::NoValue removes its key or list item. Refs to parameters stay
    (param_or_literal and is_ref_to keep working on the result)."""
    return deployed_with(tpl, overrides)


def deploy_any_prefix(tpl: dict, **overrides: Any) -> dict:
    """As deploy, except that the Fn::Ifs on HasLakePrefix stay: the result
    holds the grants for an empty and a non-empty LakePrefix alike, in the
    form lake_object_arn and condition_is_lake_prefix_nonempty check."""
    return deployed_with(tpl, overrides, keep=("HasLakePrefix",))


def deployed_with(tpl: dict, overrides: dict[str, Any], keep: tuple[str, ...] = ()) -> dict:
    values = parameter_values(tpl, overrides)
    gone = object()

    def pick(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                cond, when_true, when_false = node["Fn::If"]
                if cond in keep:
                    return {"Fn::If": [cond, *(b if b == NO_VALUE else pick(b) for b in (when_true, when_false))]}
                return pick(when_true if truth(tpl, values, {"Condition": cond}) else when_false)
            if node == NO_VALUE:
                return gone
            out = {k: pick(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not gone}
        if isinstance(node, list):
            return [v for v in (pick(v) for v in node) if v is not gone]
        return node

    deployed = json.loads(json.dumps(tpl))
    for section in ("Resources", "Outputs"):
        deployed[section] = {
            lid: pick(item)
            for lid, item in deployed.get(section, {}).items()
            if "Condition" not in item or truth(tpl, values, {"Condition": item["Condition"]})
        }
    return deployed


def rule_violations(tpl: dict, **overrides: Any) -> list[str]:
    """The AssertDescriptions of the Rules that reject these parameter values."""
    values = parameter_values(tpl, overrides)
    failed = []
    for name, rule in tpl.get("Rules", {}).items():
        if "RuleCondition" in rule and not truth(tpl, values, rule["RuleCondition"]):
            continue
        for a in rule["Assertions"]:
            if not truth(tpl, values, a["Assert"]):
                failed.append(f"{name}: {a['AssertDescription']}")
    return failed


def referenced_ids(node: Any) -> Iterator[str]:
    """Every logical id or parameter a value names: Ref, Fn::GetAtt, and the
    ${Name} / ${Name.Attr} of Fn::Sub strings (not ${!literal} nor the
    variables of its own map)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref":
                yield v
            elif k == "Fn::GetAtt":
                yield (v.split(".", 1) if isinstance(v, str) else v)[0]
            elif k == "Fn::Sub":
                text, variables = (v[0], v[1]) if isinstance(v, list) else (v, {})
                for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                    name = name.split(".", 1)[0]
                    if name not in variables:
                        yield name
                yield from referenced_ids(variables)
            else:
                yield from referenced_ids(v)
    elif isinstance(node, list):
        for v in node:
            yield from referenced_ids(v)


# --------------------------------------------------------------------------
# Function
# --------------------------------------------------------------------------


def test_function_runtime_and_build(tpl: dict) -> None:
    _, fn = the_function(tpl)
    p = props(fn)
    assert p["Runtime"] == "provided.al2023"
    assert p["Architectures"] == ["arm64"]
    assert p["Handler"] == "bootstrap"
    assert p["CodeUri"] == "."
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert fn["Metadata"]["BuildProperties"]["Binary"] == "kinesis-lake-lambda"


def test_function_memory_and_timeout_are_parameters(tpl: dict) -> None:
    _, fn = the_function(tpl)
    p = props(fn)
    mem, mem_param = param_or_literal(tpl, p["MemorySize"])
    timeout, timeout_param = param_or_literal(tpl, p["Timeout"])
    assert mem_param is not None and timeout_param is not None
    assert int(mem) == 256
    assert int(timeout) == 120


def test_function_environment(tpl: dict) -> None:
    """With the default parameters (DedupMode dynamodb)."""
    deployed = deploy(tpl)
    fid, fn = the_function(deployed)
    env = props(fn)["Environment"]["Variables"]
    bucket_id, _ = lake_bucket(deployed)
    table_id, _ = only_resource(deployed, "AWS::DynamoDB::Table")
    assert is_ref_to(env["LAKE_BUCKET"], bucket_id)
    assert is_ref_to(env["DEDUP_MODE"], "DedupMode")
    assert is_ref_to(env["DEDUP_TABLE"], table_id)
    assert is_ref_to(env["LAKE_PREFIX"], "LakePrefix")
    assert is_ref_to(env["LAKE_COMPRESSION"], "Compression")
    for optional in ("DEDUP_TTL_HOURS", "RUST_LOG"):
        assert optional in env, f"{optional} should be set explicitly"
    ttl, _ = param_or_literal(tpl, env["DEDUP_TTL_HOURS"])
    assert int(ttl) == 168
    assert is_ref_to(env["PUBLISH_WINDOW_SECONDS"], "PublishWindowSeconds")
    assert is_ref_to(env["LAKE_PAYLOAD_JSON"], "PayloadJson")
    assert "LAKE_FUNCTION" not in env or env["LAKE_FUNCTION"] == "consume"


def test_publish_window_takes_what_the_function_accepts(tpl: dict) -> None:
    """PUBLISH_WINDOW_SECONDS: 0 (no staging) or 60 to 900, default 300; a bad
    value fails the deployment rather than every cold start."""
    p = tpl["Parameters"]["PublishWindowSeconds"]
    assert p["Type"] == "Number"
    assert int(p["Default"]) == 300
    allowed = [int(v) for v in p["AllowedValues"]]
    assert 0 in allowed and 300 in allowed
    assert all(v == 0 or 60 <= v <= 900 for v in allowed), allowed
    assert "0 disables staging" in p["Description"]


def test_payload_json_takes_what_the_function_accepts(tpl: dict) -> None:
    p = tpl["Parameters"]["PayloadJson"]
    assert p["Default"] == "0"
    assert set(p["AllowedValues"]) <= {"0", "1", "true", "false"}


def test_lake_prefix_contract(tpl: dict) -> None:
    """LAKE_PREFIX: no leading or trailing slash, may be empty."""
    pattern = re.compile(tpl["Parameters"]["LakePrefix"]["AllowedPattern"])
    for ok in ("", "lake", "data/lake", "a.b-c_d"):
        assert pattern.fullmatch(ok), ok
    for bad in ("/lake", "lake/", "a//b", "/", "a b"):
        assert not pattern.fullmatch(bad), bad


def test_compression_takes_what_the_function_accepts(tpl: dict) -> None:
    """LAKE_COMPRESSION: the same choices as the function's parser, so a bad
    value fails the deployment rather than every cold start."""
    p = tpl["Parameters"]["Compression"]
    assert p["Default"] == "zstd"
    pattern = re.compile(p["AllowedPattern"])
    for ok in ("auto", "zstd", "zstd(1)", "zstd(9)", "zstd(19)", "zstd(22)", "zstd(-1)", "zstd(-7)",
               "snappy", "none"):
        assert pattern.fullmatch(ok), ok
    for bad in ("zstd(0)", "zstd(23)", "zstd(-8)", "zstd(-0)", "lz4", "gzip", "", "ZSTD (3)",
                "auto(3)", "autozstd"):
        assert not pattern.fullmatch(bad), bad


# --------------------------------------------------------------------------
# Event source mapping: exactly-once plumbing and poison-batch handling
# --------------------------------------------------------------------------


def test_report_batch_item_failures(tpl: dict) -> None:
    assert "ReportBatchItemFailures" in event_source_mapping(tpl)["FunctionResponseTypes"]


def test_bisect_on_error(tpl: dict) -> None:
    assert event_source_mapping(tpl)["BisectBatchOnFunctionError"] is True


def test_starting_position(tpl: dict) -> None:
    assert event_source_mapping(tpl)["StartingPosition"] == "TRIM_HORIZON"


def test_mapping_targets_the_function(tpl: dict) -> None:
    fid, _ = the_function(tpl)
    assert is_ref_to(event_source_mapping(tpl)["FunctionName"], fid)


def test_retries_and_record_age_are_finite(tpl: dict) -> None:
    esm = event_source_mapping(tpl)
    retries, retries_param = param_or_literal(tpl, esm["MaximumRetryAttempts"])
    age, age_param = param_or_literal(tpl, esm["MaximumRecordAgeInSeconds"])
    assert retries is not None and 0 <= int(retries) <= 10000
    assert age is not None and 60 <= int(age) <= 604800
    # -1 means "infinite" for both: the parameters must not accept it.
    if retries_param is not None:
        assert int(retries_param["MinValue"]) >= 0
    if age_param is not None:
        assert int(age_param["MinValue"]) >= 60


def test_batching_parameters(tpl: dict) -> None:
    esm = event_source_mapping(tpl)
    batch, _ = param_or_literal(tpl, esm["BatchSize"])
    window, _ = param_or_literal(tpl, esm["MaximumBatchingWindowInSeconds"])
    pf, pf_param = param_or_literal(tpl, esm["ParallelizationFactor"])
    assert 1000 <= int(batch) <= 10000
    assert int(window) == 30
    assert int(pf) == 1
    assert pf_param is not None and int(pf_param["MaxValue"]) <= 10


def test_on_failure_destination_is_the_failed_batch_bucket(tpl: dict) -> None:
    """An S3 destination: Lambda writes each failed batch's whole invocation
    record there (its records included), unlike SQS/SNS (metadata only)."""
    bid, bucket = failed_batch_bucket(tpl)
    lake_id, _ = lake_bucket(tpl)
    assert bid != lake_id, "failed batches must not go into the lake's bucket"
    assert bid == "FailedBatchBucket"
    assert bucket.get("DeletionPolicy") == "Retain", "failed batches may be the records' only copy"


def test_failed_batch_bucket_is_encrypted_private_and_expiring(tpl: dict) -> None:
    _, bucket = failed_batch_bucket(tpl)
    p = props(bucket)
    rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert [r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    pab = p["PublicAccessBlockConfiguration"]
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert is_true(pab.get(flag)), flag
    assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    expiring = [r for r in p["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert len(expiring) == 1 and "Prefix" not in expiring[0], expiring
    assert is_ref_to(expiring[0]["ExpirationInDays"], "FailedBatchExpirationDays")
    assert expiring[0]["Status"] == "Enabled"
    param = tpl["Parameters"]["FailedBatchExpirationDays"]
    assert param["Type"] == "Number" and int(param["Default"]) == 30 and int(param["MinValue"]) >= 1


def test_failed_batch_bucket_policy_denies_non_tls(tpl: dict) -> None:
    bid, _ = failed_batch_bucket(tpl)
    policies = [p for p in resources(tpl, "AWS::S3::BucketPolicy").values() if is_ref_to(props(p)["Bucket"], bid)]
    assert len(policies) == 1, "the failed-batch bucket needs its bucket policy"
    denies = [st for st in as_list(props(policies[0])["PolicyDocument"]["Statement"])
              if st["Effect"] == "Deny"
              and str(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"]
    assert len(denies) == 1, "no Deny on aws:SecureTransport=false"
    st = denies[0]
    assert st["Principal"] in ("*", {"AWS": "*"}) and as_list(st["Action"]) == ["s3:*"]
    assert as_list(st["Resource"]) == [{"Fn::GetAtt": [bid, "Arn"]}, {"Fn::Sub": f"${{{bid}.Arn}}/*"}]


def test_the_consumer_role_can_write_failed_batches(tpl: dict) -> None:
    """What the AWS Lambda docs require of the execution role for an S3
    on-failure destination: s3:PutObject on its objects, s3:ListBucket on it."""
    bid, _ = failed_batch_bucket(tpl)
    _, fn = the_function(tpl)
    granted = granted_actions(tpl, role_of(tpl, fn))
    puts = [st for st in granted.get("s3:PutObject", []) if st["Resource"] == {"Fn::Sub": f"${{{bid}.Arn}}/*"}]
    assert len(puts) == 1 and "Condition" not in puts[0], granted.get("s3:PutObject")
    lists = [st for st in granted.get("s3:ListBucket", []) if st["Resource"] == {"Fn::GetAtt": [bid, "Arn"]}]
    assert len(lists) == 1 and "Condition" not in lists[0], granted.get("s3:ListBucket")
    # nothing else on that bucket: the consumer never reads failed batches
    for action, sts in granted.items():
        for st in sts:
            if bid in "".join(strings_in(st["Resource"])) or is_getatt(st["Resource"], bid, "Arn"):
                assert action in ("s3:PutObject", "s3:ListBucket"), f"{action} on the failed-batch bucket"


def test_new_failed_batches_notify_the_alarm_topic(tpl: dict) -> None:
    """Each object in the failed-batch bucket reaches the alarm topic: the bucket
    sends its events to EventBridge, a rule on Object Created in that bucket
    targets the topic (with the key and the replay command), the stack's topic
    lets that rule publish, and an alarm counts the rule's matches."""
    bid, bucket = failed_batch_bucket(tpl)
    assert is_true(props(bucket)["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"])
    rules = [(rid, props(r)) for rid, r in resources(tpl, "AWS::Events::Rule").items()
             if props(r).get("EventPattern", {}).get("source") == ["aws.s3"]]
    assert len(rules) == 1, rules
    rid, rule = rules[0]
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": bid}]
    assert rule.get("State", "ENABLED") == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == ALARM_TOPIC
    template = "".join(strings_in(target["InputTransformer"]["InputTemplate"]))
    assert "kinesis-lake replay" in template and "--failed s3://<bucket>/<key>" in template
    assert target["InputTransformer"]["InputPathsMap"] == {
        "bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}
    (policy,) = [props(p) for p in resources(tpl, "AWS::SNS::TopicPolicy").values()]
    assert policy["Topics"] == [{"Ref": "AlarmTopic"}]
    (st,) = as_list(policy["PolicyDocument"]["Statement"])
    assert st["Principal"] == {"Service": "events.amazonaws.com"} and st["Action"] == "sns:Publish"
    assert st["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [rid, "Arn"]}
    alarms = [props(a) for a in resources(tpl, "AWS::CloudWatch::Alarm").values()
              if props(a).get("Namespace") == "AWS/Events"]
    assert len(alarms) == 1, alarms
    a = alarms[0]
    assert a["MetricName"] == "MatchedEvents"
    assert a["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": rid}}]
    assert a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and int(a["Threshold"]) == 1
    assert a["TreatMissingData"] == "notBreaching"


def test_no_sqs_leftovers(tpl: dict) -> None:
    """The SQS on-failure queue is gone, with its policy, alarm, grant and output."""
    for lid, res in tpl["Resources"].items():
        assert not res["Type"].startswith("AWS::SQS::"), lid
    for lid, st in policy_statements(tpl):
        assert not any(a.startswith("sqs:") for a in as_list(st["Action"])), (lid, st)
    for lid, a in resources(tpl, "AWS::CloudWatch::Alarm").items():
        assert props(a).get("Namespace") != "AWS/SQS", lid
    assert not [o for o in tpl["Outputs"] if "Queue" in o]
    assert "FailureQueue" not in "".join(strings_in(tpl))


def test_created_at_unit_reaches_the_consumer(tpl: dict) -> None:
    param = tpl["Parameters"]["CreatedAtUnit"]
    assert param["Type"] == "String" and param["Default"] == "s"
    assert param["AllowedValues"] == ["s", "ms", "us", "ns"]
    _, fn = the_function(tpl)
    assert is_ref_to(props(fn)["Environment"]["Variables"]["CREATED_AT_UNIT"], "CreatedAtUnit")


def test_stream_is_created_or_existing(tpl: dict) -> None:
    params = tpl["Parameters"]
    assert params["ExistingStreamArn"]["Default"] == ""
    assert params["StreamMode"]["AllowedValues"] == ["ON_DEMAND", "PROVISIONED"]
    for name in ("ShardCount", "RetentionHours"):
        assert name in params
    sid, stream = only_resource(tpl, "AWS::Kinesis::Stream")
    assert stream.get("Condition") == "CreateStream"
    assert tpl["Conditions"]["CreateStream"] == {"Fn::Equals": [{"Ref": "ExistingStreamArn"}, ""]}
    assert event_source_mapping(tpl)["EventSourceArn"] == {
        "Fn::If": ["CreateStream", {"Fn::GetAtt": [sid, "Arn"]}, {"Ref": "ExistingStreamArn"}]
    }


# --------------------------------------------------------------------------
# DynamoDB dedup table
# --------------------------------------------------------------------------


def test_dedup_table(tpl: dict) -> None:
    _, table = only_resource(tpl, "AWS::DynamoDB::Table")
    assert table.get("Condition") == "UseDynamoDB"
    p = props(table)
    billing, billing_param = param_or_literal(tpl, p["BillingMode"])
    assert billing_param is not None and billing == "PAY_PER_REQUEST"
    assert billing_param["AllowedValues"] == ["PAY_PER_REQUEST", "PROVISIONED"]
    # Capacity only when provisioned: on-demand tables must not have it.
    assert p["ProvisionedThroughput"] == {"Fn::If": [
        "Provisioned",
        {"ReadCapacityUnits": 5, "WriteCapacityUnits": {"Ref": "DedupMinWriteCapacity"}},
        NO_VALUE,
    ]}
    assert p["KeySchema"] == [{"AttributeName": "event_uuid", "KeyType": "HASH"}]
    assert {"AttributeName": "event_uuid", "AttributeType": "S"} in p["AttributeDefinitions"]
    ttl = p["TimeToLiveSpecification"]
    assert ttl["AttributeName"] == "expires_at"
    assert is_true(ttl["Enabled"])
    assert is_true(p["SSESpecification"]["SSEEnabled"])
    pitr, pitr_param = param_or_literal(
        tpl, p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
    )
    assert pitr_param is not None and set(pitr_param["AllowedValues"]) == {"true", "false"}


# --------------------------------------------------------------------------
# Dedup modes (DedupMode) and the table's billing (DedupBillingMode)
# --------------------------------------------------------------------------

DEDUP_MODES = ("dynamodb", "window")
BILLING_MODES = ("PAY_PER_REQUEST", "PROVISIONED")


def failed_batch_message(tpl: dict) -> str:
    """The text the failed-batch rule sends (InputTemplate), as one string."""
    (rule,) = [props(r) for r in resources(tpl, "AWS::Events::Rule").values()
               if props(r).get("EventPattern", {}).get("source") == ["aws.s3"]]
    (target,) = rule["Targets"]
    return "".join(strings_in(target["InputTransformer"]["InputTemplate"]))


def test_dedup_mode_parameter(tpl: dict) -> None:
    p = tpl["Parameters"]["DedupMode"]
    assert p["Type"] == "String"
    assert p["Default"] == "dynamodb"
    assert p["AllowedValues"] == ["dynamodb", "window"]
    # What each mode guarantees, as the operator must read it.
    text = " ".join(p["Description"].split())
    for phrase in ("DedupTtlHours", "one DynamoDB write per event", "no DynamoDB", "retries of the same batch",
                   "deterministic names", "look-back", "last hour", "written again", "PublishWindowSeconds > 0"):
        assert phrase in text, phrase
    # The consumer is told the mode in every mode.
    _, fn = the_function(tpl)
    assert is_ref_to(props(fn)["Environment"]["Variables"]["DEDUP_MODE"], "DedupMode")
    assert tpl["Conditions"]["UseDynamoDB"] == {"Fn::Equals": [{"Ref": "DedupMode"}, "dynamodb"]}
    assert tpl["Conditions"]["Provisioned"] == {"Fn::And": [
        {"Condition": "UseDynamoDB"},
        {"Fn::Equals": [{"Ref": "DedupBillingMode"}, "PROVISIONED"]},
    ]}


def test_dynamodb_mode_has_the_table(tpl: dict) -> None:
    deployed = deploy(tpl, DedupMode="dynamodb")
    table_id, _ = only_resource(deployed, "AWS::DynamoDB::Table")
    _, fn = the_function(deployed)
    env = props(fn)["Environment"]["Variables"]
    assert is_ref_to(env["DEDUP_MODE"], "DedupMode")
    assert is_ref_to(env["DEDUP_TABLE"], table_id)
    assert is_ref_to(env["DEDUP_TTL_HOURS"], "DedupTtlHours")
    granted = granted_actions(deployed, role_of(deployed, fn))
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DescribeTable"):
        assert [st["Resource"] for st in granted[action]] == [{"Fn::GetAtt": [table_id, "Arn"]}], action
    assert is_ref_to(deployed["Outputs"]["DedupTableName"]["Value"], table_id)
    message = failed_batch_message(deployed)
    assert f"--dedup-table ${{{table_id}}} --failed s3://<bucket>/<key>" in message
    assert "--dedup window" not in message


def test_window_mode_has_no_dynamodb(tpl: dict) -> None:
    """DedupMode window: no table, no grant, no table variables, no output,
    nothing naming the table, and the failed-batch notice replays with
    --dedup window. The rest of the consumer's role is unchanged."""
    for billing in BILLING_MODES:
        deployed = deploy(tpl, DedupMode="window", DedupBillingMode=billing)
        assert not resources(deployed, "AWS::DynamoDB::Table"), billing
        assert not [lid for lid, r in deployed["Resources"].items()
                    if r["Type"].startswith("AWS::ApplicationAutoScaling::")], billing
        for lid, st in policy_statements(deployed):
            assert not [a for a in as_list(st["Action"]) if a.startswith("dynamodb:")], (lid, st)
            assert st.get("Sid") != "DedupTable", lid
        _, fn = the_function(deployed)
        env = props(fn)["Environment"]["Variables"]
        assert is_ref_to(env["DEDUP_MODE"], "DedupMode")
        assert not {"DEDUP_TABLE", "DEDUP_TTL_HOURS"} & set(env), sorted(env)
        assert "DedupTableName" not in deployed["Outputs"]
        assert "DedupTable" not in set(referenced_ids(deployed["Resources"])) | set(
            referenced_ids(deployed["Outputs"]))
        message = failed_batch_message(deployed)
        assert "--dedup window --failed s3://<bucket>/<key>" in message
        assert "--dedup-table" not in message and "DedupTable" not in message

    def consumer_grants(deployed: dict) -> set[str]:
        return set(granted_actions(deployed, role_of(deployed, the_function(deployed)[1])))

    full = consumer_grants(deploy(tpl, DedupMode="dynamodb"))
    assert consumer_grants(deploy(tpl, DedupMode="window")) == {a for a in full if not a.startswith("dynamodb:")}


@pytest.mark.parametrize("dedup_mode", DEDUP_MODES)
@pytest.mark.parametrize("billing", BILLING_MODES)
@pytest.mark.parametrize("existing", [False, True], ids=["created-stream-and-topic", "existing-stream-and-topic"])
def test_every_reference_resolves(tpl: dict, dedup_mode: str, billing: str, existing: bool) -> None:
    """Whatever the parameters, nothing names a resource the stack does not
    create (CloudFormation would reject the template)."""
    overrides: dict[str, Any] = {"DedupMode": dedup_mode, "DedupBillingMode": billing}
    if existing:
        overrides["ExistingStreamArn"] = "arn:aws:kinesis:eu-west-1:123456789012:stream/events"
        overrides["AlarmTopicArn"] = "arn:aws:sns:eu-west-1:123456789012:alarms"
    deployed = deploy(tpl, **overrides)
    known = set(deployed["Resources"]) | set(deployed["Parameters"])
    for lid, res in deployed["Resources"].items():
        dangling = {r for r in referenced_ids(res) if r not in known and not r.startswith("AWS::")}
        dangling |= {d for d in as_list(res.get("DependsOn", [])) if d not in deployed["Resources"]}
        assert not dangling, f"{lid} names {sorted(dangling)}, absent with {overrides}"
    for name, out in deployed["Outputs"].items():
        dangling = {r for r in referenced_ids(out) if r not in known and not r.startswith("AWS::")}
        assert not dangling, f"output {name} names {sorted(dangling)}, absent with {overrides}"


def test_window_mode_needs_a_publication_window(tpl: dict) -> None:
    """DedupMode window with PublishWindowSeconds 0 (no staging, so nothing
    drops repeats) is rejected at deploy time by a rule; every other
    combination passes."""
    assert 0 in [int(v) for v in tpl["Parameters"]["PublishWindowSeconds"]["AllowedValues"]]
    for mode in DEDUP_MODES:
        for window in tpl["Parameters"]["PublishWindowSeconds"]["AllowedValues"]:
            violations = rule_violations(tpl, DedupMode=mode, PublishWindowSeconds=window)
            if mode == "window" and int(window) == 0:
                assert len(violations) == 1, violations
                assert "DedupMode window needs PublishWindowSeconds > 0" in " ".join(violations[0].split())
            else:
                assert not violations, (mode, window, violations)
    assert not rule_violations(tpl)


def test_dedup_billing_parameters(tpl: dict) -> None:
    params = tpl["Parameters"]
    assert params["DedupBillingMode"]["Default"] == "PAY_PER_REQUEST"
    assert params["DedupBillingMode"]["AllowedValues"] == list(BILLING_MODES)
    text = " ".join(params["DedupBillingMode"]["Description"].split())
    for phrase in ("throttled", "Lambda retries the batch", "exactly once still holds", "MaximumRetryAttempts"):
        assert phrase in text, phrase
    target = params["DedupTargetUtilization"]
    assert target["Type"] == "Number"
    assert (int(target["Default"]), int(target["MinValue"]), int(target["MaxValue"])) == (75, 20, 90)
    low, high = params["DedupMinWriteCapacity"], params["DedupMaxWriteCapacity"]
    assert low["Type"] == "Number" and int(low["Default"]) == 300
    # ~1M events/hour is ~280 writes/s: the floor must carry that.
    assert int(low["Default"]) >= 1_000_000 / 3600
    assert high["Type"] == "Number" and int(high["Default"]) == 40000
    assert int(low["MinValue"]) >= 1 and int(high["MaxValue"]) <= 40000


def test_provisioned_billing_scales_the_table(tpl: dict) -> None:
    """PROVISIONED: capacity on the table and target-tracking auto scaling of
    its writes (DedupMinWriteCapacity..DedupMaxWriteCapacity) and reads (from
    5), at DedupTargetUtilization, with the service-linked role."""
    deployed = deploy(tpl, DedupBillingMode="PROVISIONED")
    table_id, table = only_resource(deployed, "AWS::DynamoDB::Table")
    p = props(table)
    assert is_ref_to(p["BillingMode"], "DedupBillingMode")
    assert p["ProvisionedThroughput"] == {"ReadCapacityUnits": 5, "WriteCapacityUnits": {"Ref": "DedupMinWriteCapacity"}}

    targets = resources(deployed, "AWS::ApplicationAutoScaling::ScalableTarget")
    by_dimension = {props(t)["ScalableDimension"]: (tid, props(t)) for tid, t in targets.items()}
    assert len(by_dimension) == len(targets) == 2, sorted(targets)
    write_id, write = by_dimension["dynamodb:table:WriteCapacityUnits"]
    read_id, read = by_dimension["dynamodb:table:ReadCapacityUnits"]
    for t in (write, read):
        assert t["ServiceNamespace"] == "dynamodb"
        assert t["ResourceId"] == {"Fn::Sub": f"table/${{{table_id}}}"}
        assert "RoleARN" not in t, "the service-linked role is used without RoleARN"
    assert is_ref_to(write["MinCapacity"], "DedupMinWriteCapacity")
    assert is_ref_to(write["MaxCapacity"], "DedupMaxWriteCapacity")
    assert int(read["MinCapacity"]) == 5 and int(read["MaxCapacity"]) >= int(read["MinCapacity"])

    policies = resources(deployed, "AWS::ApplicationAutoScaling::ScalingPolicy")
    by_target = {props(pol)["ScalingTargetId"]["Ref"]: props(pol) for pol in policies.values()}
    assert len(by_target) == len(policies) == 2, sorted(policies)
    for target_id, metric in ((write_id, "DynamoDBWriteCapacityUtilization"),
                              (read_id, "DynamoDBReadCapacityUtilization")):
        pol = by_target[target_id]
        assert pol["PolicyType"] == "TargetTrackingScaling"
        config = pol["TargetTrackingScalingPolicyConfiguration"]
        assert is_ref_to(config["TargetValue"], "DedupTargetUtilization")
        assert config["PredefinedMetricSpecification"] == {"PredefinedMetricType": metric}
    for lid in (*targets, *policies):
        assert tpl["Resources"][lid].get("Condition") == "Provisioned", lid


def test_on_demand_billing_has_no_scaling(tpl: dict) -> None:
    deployed = deploy(tpl, DedupBillingMode="PAY_PER_REQUEST")
    _, table = only_resource(deployed, "AWS::DynamoDB::Table")
    assert "ProvisionedThroughput" not in props(table)
    billing, _ = param_or_literal(deployed, props(table)["BillingMode"])
    assert billing == "PAY_PER_REQUEST"
    assert not [lid for lid, r in deployed["Resources"].items()
                if r["Type"].startswith("AWS::ApplicationAutoScaling::")]
    # ... which is also the default.
    assert deploy(tpl)["Resources"].keys() == deployed["Resources"].keys()


def test_parameter_groups(tpl: dict) -> None:
    """Every parameter is in exactly one group of the console's form; the
    dedup ones in "Dedup table"."""
    groups = tpl["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    listed = [name for g in groups for name in g["Parameters"]]
    assert sorted(listed) == sorted(tpl["Parameters"]), "a parameter is missing from or repeated in the groups"
    (dedup,) = [g["Parameters"] for g in groups if g["Label"]["default"] == "Dedup table"]
    for name in ("DedupMode", "DedupBillingMode", "DedupTargetUtilization", "DedupMinWriteCapacity",
                 "DedupMaxWriteCapacity", "PointInTimeRecovery"):
        assert name in dedup, name


# --------------------------------------------------------------------------
# Lake bucket
# --------------------------------------------------------------------------


def test_bucket_encryption(tpl: dict) -> None:
    _, bucket = lake_bucket(tpl)
    rules = props(bucket)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algos = {r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules}
    assert algos and algos <= {"AES256", "aws:kms", "aws:kms:dsse"}


def test_bucket_public_access_block(tpl: dict) -> None:
    _, bucket = lake_bucket(tpl)
    pab = props(bucket)["PublicAccessBlockConfiguration"]
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert is_true(pab.get(flag)), flag


def test_bucket_policy_denies_non_tls(tpl: dict) -> None:
    bucket_id, _ = lake_bucket(tpl)
    policies = [p for p in resources(tpl, "AWS::S3::BucketPolicy").values() if is_ref_to(props(p)["Bucket"], bucket_id)]
    assert policies, "lake bucket has no bucket policy"
    found = False
    for pol in policies:
        for st in as_list(props(pol)["PolicyDocument"]["Statement"]):
            cond = st.get("Condition", {}).get("Bool", {})
            if st["Effect"] == "Deny" and str(cond.get("aws:SecureTransport")).lower() == "false":
                assert st["Principal"] in ("*", {"AWS": "*"})
                assert "s3:*" in as_list(st["Action"])
                res = as_list(st["Resource"])
                assert any(is_getatt(r, bucket_id, "Arn") for r in res), "deny must cover the bucket"
                assert any(isinstance(r, dict) and r.get("Fn::Sub") == f"${{{bucket_id}.Arn}}/*" for r in res), (
                    "deny must cover the objects"
                )
                found = True
    assert found, "no Deny on aws:SecureTransport=false"


def test_bucket_versioning_and_lifecycle(tpl: dict) -> None:
    _, bucket = lake_bucket(tpl)
    p = props(bucket)
    assert p["VersioningConfiguration"]["Status"] == {"Fn::If": ["VersioningEnabled", "Enabled", "Suspended"]}
    rules = p["LifecycleConfiguration"]["Rules"]
    errors = [r for r in rules if any("_errors/" in s for s in strings_in(r.get("Prefix", "")))]
    assert errors and "ExpirationInDays" in errors[0]
    assert errors[0]["Prefix"] == {"Fn::If": ["HasLakePrefix", {"Fn::Sub": "${LakePrefix}/_errors/"}, "_errors/"]}
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)


def test_staging_objects_expire_and_their_noncurrent_versions_after_a_day(tpl: dict) -> None:
    """Published staging objects hold nothing the lake lacks: in a versioned bucket their
    noncurrent versions must not stay the bucket-wide NoncurrentVersionExpirationDays."""
    _, bucket = lake_bucket(tpl)
    rules = props(bucket)["LifecycleConfiguration"]["Rules"]
    staging = [r for r in rules if any("_staging/" in s for s in strings_in(r.get("Prefix", "")))]
    assert len(staging) == 1, staging
    rule = staging[0]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "StagingExpirationDays"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}


# --------------------------------------------------------------------------
# Glue / Athena
# --------------------------------------------------------------------------


def test_glue_events_table_partition_projection(tpl: dict) -> None:
    _, table = only_resource(tpl, "AWS::Glue::Table")
    ti = props(table)["TableInput"]
    assert ti["Name"] == "events"
    params = ti["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params["projection.event_type.type"] == "injected"
    assert params["projection.event_subtype.type"] == "injected"
    assert params["projection.event_date.type"] == "date"
    assert params["projection.event_date.format"] == "yyyy-MM-dd"
    assert params["projection.event_date.interval"] == "1"
    assert params["projection.event_date.interval.unit"] == "DAYS"
    assert any(s.endswith(",NOW") for s in strings_in(params["projection.event_date.range"]))

    assert [(k["Name"], k["Type"]) for k in ti["PartitionKeys"]] == [
        ("event_type", "string"),
        ("event_subtype", "string"),
        ("event_date", "string"),
    ]

    template = params["storage.location.template"]
    sub = template["Fn::Sub"]
    text = (sub[0] if isinstance(sub, list) else sub).replace("${!", "${")
    for key in ("event_type", "event_subtype", "event_date"):
        assert f"{key}=${{{key}}}" in text, key
    assert text.index("event_type=") < text.index("event_subtype=") < text.index("event_date=")
    # The prefix part must follow the LAKE_PREFIX contract: "<prefix>/" or "".
    assert isinstance(sub, list)
    assert text.startswith("s3://${Bucket}/${Prefix}event_type=")
    prefix = sub[1]["Prefix"]
    assert prefix == {"Fn::If": ["HasLakePrefix", {"Fn::Sub": "${LakePrefix}/"}, ""]}
    assert condition_is_lake_prefix_nonempty(tpl, "HasLakePrefix")


def test_glue_events_table_format_and_columns(tpl: dict) -> None:
    _, table = only_resource(tpl, "AWS::Glue::Table")
    sd = props(table)["TableInput"]["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert sd["OutputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
    columns, partitions = events_table_of_the_binary()
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == columns
    # Partition columns are not inside the Parquet files.
    names = {c["Name"] for c in sd["Columns"]}
    assert not names & {name for name, _ in partitions}
    assert [(c["Name"], c["Type"]) for c in props(table)["TableInput"]["PartitionKeys"]] == partitions


def events_table_of_the_binary() -> tuple[list, list]:
    """The `events` table's columns and partition columns as `kinesis-lake ddl`
    prints them: the one definition of the fixed columns (src/core/columns.rs),
    so the template's Glue table cannot drift from what the files carry."""
    import os

    binary = Path(os.environ.get("KL_BIN", REPO_ROOT / "target" / "debug" / "kinesis-lake"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build` (make test does)")
    ddl = subprocess.run(
        [str(binary), "ddl", "--location", "s3://bucket/lake"], check=True, capture_output=True, text=True
    ).stdout
    body = ddl.split("`events` (", 1)[1].split("\n)", 1)[0]
    columns = [tuple(line.strip().rstrip(",").replace("`", "").split(" ", 1)) for line in body.strip().splitlines()]
    part = re.search(r"PARTITIONED BY \((.*?)\)\n", ddl).group(1)
    partitions = [tuple(p.strip().replace("`", "").split(" ", 1)) for p in part.split(",")]
    return columns, partitions


# --------------------------------------------------------------------------
# Alarms
# --------------------------------------------------------------------------


def test_alarms(tpl: dict) -> None:
    fid, _ = the_function(tpl)
    by_metric = alarms_on(tpl, fid)
    for key in (
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("KinesisLake", "DeadLetters"),
    ):
        assert key in by_metric, f"missing alarm on {key}"
        a = by_metric[key]
        assert a["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": fid}}], key
        assert a.get("AlarmActions"), f"alarm on {key} notifies nobody"
    threshold, _ = param_or_literal(tpl, by_metric[("AWS/Lambda", "IteratorAge")]["Threshold"])
    assert int(threshold) == 60000


# --------------------------------------------------------------------------
# Publisher: the same binary with LAKE_FUNCTION=publish, on a schedule
# --------------------------------------------------------------------------


def test_publisher_is_the_consumers_binary(tpl: dict) -> None:
    _, consumer = the_function(tpl)
    pid, publisher = the_publisher(tpl)
    assert publisher["Metadata"] == consumer["Metadata"]
    for key in ("Runtime", "Architectures", "Handler", "CodeUri"):
        assert props(publisher)[key] == props(consumer)[key], key


def test_publisher_environment(tpl: dict) -> None:
    _, consumer = the_function(tpl)
    _, publisher = the_publisher(tpl)
    cenv = props(consumer)["Environment"]["Variables"]
    env = props(publisher)["Environment"]["Variables"]
    assert env["LAKE_FUNCTION"] == "publish"
    # The same lake, window and Parquet options as the consumer.
    for same in ("LAKE_BUCKET", "LAKE_PREFIX", "PUBLISH_WINDOW_SECONDS", "LAKE_COMPRESSION", "LAKE_PAYLOAD_JSON",
                 "RUST_LOG"):
        assert env[same] == cenv[same], same
    assert is_ref_to(env["PUBLISH_WINDOW_SECONDS"], "PublishWindowSeconds")
    target, target_param = param_or_literal(tpl, env["PUBLISH_TARGET_FILE_MIB"])
    assert target_param is not None and int(target) == 128
    assert 0 <= int(env["PUBLISH_GRACE_SECONDS"]) <= 900
    # It reads and writes the lake only.
    assert not {"DEDUP_TABLE", "DEDUP_TTL_HOURS"} & set(env)


def test_publisher_memory_timeout_and_retries(tpl: dict) -> None:
    _, publisher = the_publisher(tpl)
    p = props(publisher)
    mem, mem_param = param_or_literal(tpl, p["MemorySize"])
    assert mem_param is not None and int(mem) == 2048
    assert int(p["Timeout"]) == 900
    # A failed run is resumed by the next scheduled one, not retried by Lambda.
    assert int(p["EventInvokeConfig"]["MaximumRetryAttempts"]) == 0
    # Its own log group, in the EMF-friendly text format.
    log_group = p["LoggingConfig"]["LogGroup"]
    _, consumer = the_function(tpl)
    assert log_group != props(consumer)["LoggingConfig"]["LogGroup"]
    assert tpl["Resources"][log_group["Ref"]]["Type"] == "AWS::Logs::LogGroup"
    assert p["LoggingConfig"]["LogFormat"] == "Text"


def test_publisher_runs_on_a_schedule(tpl: dict) -> None:
    _, consumer = the_function(tpl)
    _, publisher = the_publisher(tpl)
    events = props(publisher).get("Events", {})
    schedules = [e for e in events.values() if e.get("Type") in ("Schedule", "ScheduleV2")]
    assert len(schedules) == 1, events
    (schedule,) = schedules
    sp = schedule["Properties"]
    expression = sp["Schedule"] if schedule["Type"] == "Schedule" else sp["ScheduleExpression"]
    value, param = param_or_literal(tpl, expression)
    assert param is not None and value == "rate(1 minute)"
    assert re.fullmatch(param["AllowedPattern"], "rate(1 minute)")
    assert re.fullmatch(param["AllowedPattern"], "cron(0/5 * * * ? *)")
    assert not re.fullmatch(param["AllowedPattern"], "every minute")
    # No retries: the next run resumes.
    assert int(sp["RetryPolicy"]["MaximumRetryAttempts"]) == 0
    # Its event must not publish open windows (that is for a manual invoke).
    assert "publish_open_windows" not in sp.get("Input", "")
    # Nothing else is scheduled: the consumer is driven by the stream only,
    # and no stand-alone rule or schedule invokes a function (the one rule,
    # on new failed batches, notifies the alarm topic).
    assert all(e.get("Type") not in ("Schedule", "ScheduleV2") for e in props(consumer).get("Events", {}).values())
    assert not resources(tpl, "AWS::Scheduler::Schedule")
    for rid, rule in resources(tpl, "AWS::Events::Rule").items():
        assert "ScheduleExpression" not in props(rule), rid
        assert [t["Arn"] for t in props(rule)["Targets"]] == [ALARM_TOPIC], rid


def test_publisher_exists_without_staging_too(tpl: dict) -> None:
    """Not conditional on PublishWindowSeconds: after a switch to 0 it still
    publishes the windows staged before."""
    pid, publisher = the_publisher(tpl)
    role_id = role_of(tpl, publisher)
    assert "Condition" not in publisher and "Condition" not in tpl["Resources"][role_id]
    for a in resources(tpl, "AWS::CloudWatch::Alarm").values():
        assert "Condition" not in a


def test_publisher_role_is_its_own_and_least_privilege(tpl: dict) -> None:
    """With the default parameters (TableFormat hive: no Iceberg grants,
    see the Iceberg tests below)."""
    tpl = deploy_any_prefix(tpl)
    _, consumer = the_function(tpl)
    pid, publisher = the_publisher(tpl)
    role_id = role_of(tpl, publisher)
    assert role_id != role_of(tpl, consumer), "the publisher needs a role of its own"
    granted = granted_actions(tpl, role_id)
    # No dedup table, no stream, no queue, no deletes (the lifecycle rule
    # expires the staging objects).
    for action in granted:
        assert not action.startswith(("dynamodb:", "kinesis:", "sqs:")), f"publisher role grants {action}"
    assert set(granted) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
    }, sorted(granted)

    def object_paths(action: str) -> set[str]:
        return {lake_object_arn(tpl, r) for st in granted[action] for r in as_list(st["Resource"])}

    assert object_paths("s3:PutObject") == {
        "${Dir}event_type=*",
        "${Dir}_errors/*",
        "${Dir}_publish/*",
        "${Dir}_schemas/*",
    }
    assert object_paths("s3:GetObject") == {"${Dir}_staging/*", "${Dir}_publish/*", "${Dir}_schemas/*"}

    # Listing: the lake root (start-up check) and the folders it reads, the
    # same condition style as the consumer's.
    bucket_id, _ = lake_bucket(tpl)
    for st in granted["s3:ListBucket"]:
        assert is_getatt(st["Resource"], bucket_id, "Arn")
        cond = st["Condition"]["Fn::If"]
        assert condition_is_lake_prefix_nonempty(tpl, cond[0])
        assert cond[1]["StringLike"]["s3:prefix"] == [
            {"Fn::Sub": "${LakePrefix}/"},
            {"Fn::Sub": "${LakePrefix}/_staging/*"},
            {"Fn::Sub": "${LakePrefix}/_publish/*"},
            {"Fn::Sub": "${LakePrefix}/_schemas/*"},
        ]
        assert cond[2] == {"Ref": "AWS::NoValue"}

    # Logs: its own log group only.
    log_group = props(publisher)["LoggingConfig"]["LogGroup"]["Ref"]
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        for st in granted[action]:
            assert as_list(st["Resource"]) == [{"Fn::GetAtt": [log_group, "Arn"]}]


def test_staging_expires(tpl: dict) -> None:
    _, bucket = lake_bucket(tpl)
    rules = props(bucket)["LifecycleConfiguration"]["Rules"]
    staging = [r for r in rules if any("_staging/" in s for s in strings_in(r.get("Prefix", "")))]
    assert len(staging) == 1, rules
    (rule,) = staging
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == {"Fn::If": ["HasLakePrefix", {"Fn::Sub": "${LakePrefix}/_staging/"}, "_staging/"]}
    days, days_param = param_or_literal(tpl, rule["ExpirationInDays"])
    assert days_param is not None and int(days) == 7


def test_publisher_alarms(tpl: dict) -> None:
    pid, _ = the_publisher(tpl)
    by_metric = alarms_on(tpl, pid)

    oldest = by_metric[("KinesisLake", "OldestUnpublishedWindowAgeS")]
    assert oldest["Statistic"] == "Maximum"
    assert int(oldest["Period"]) == 60
    assert oldest["ComparisonOperator"] == "GreaterThanThreshold"
    threshold, threshold_param = param_or_literal(tpl, oldest["Threshold"])
    assert threshold_param is not None and int(threshold) == 900
    # A publisher that does not run emits nothing: that must alarm too.
    assert oldest["TreatMissingData"] == "breaching"
    # ... but not while one run (up to its timeout) is still going.
    _, publisher = the_publisher(tpl)
    assert int(oldest["Period"]) * int(oldest.get("DatapointsToAlarm", oldest["EvaluationPeriods"])) >= int(
        props(publisher)["Timeout"]
    )

    errors = by_metric[("AWS/Lambda", "Errors")]
    assert errors["Statistic"] == "Sum"
    assert int(errors["Threshold"]) == 1
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert errors["TreatMissingData"] == "notBreaching"

    for a in (oldest, errors):
        assert a["AlarmActions"] == [ALARM_TOPIC]
        assert a["OKActions"] == [ALARM_TOPIC]


def test_all_alarms_notify_the_alarm_topic(tpl: dict) -> None:
    for lid, a in resources(tpl, "AWS::CloudWatch::Alarm").items():
        assert props(a)["AlarmActions"] == [ALARM_TOPIC], lid


# --------------------------------------------------------------------------
# IAM: least privilege
# --------------------------------------------------------------------------

# Actions that may be granted on Resource "*" (those whose IAM definition has
# no resource type), each with the reason it is needed. Deliberately empty:
# - cloudwatch:PutMetricData is not needed: metrics use Embedded Metric Format,
#   which CloudWatch extracts from the function's log lines.
# - kinesis:ListStreams (Resource "*" only) is not needed: the event source
#   mapping is given the stream ARN.
# - xray:PutTraceSegments would be the next candidate if tracing is enabled.
ALLOWED_STAR_ACTIONS: dict[str, str] = {
    "lakeformation:GetDataAccess": (
        "no resource type; AWS documents it on Resource '*' for the Glue Iceberg REST endpoint "
        "and table optimizers; only with TableFormat iceberg and IcebergCatalog glue "
        "(test_star_resource_only_with_the_glue_catalog)"
    ),
}

# Managed policies SAM/Lambda examples like to attach; all contain Resource "*".
FORBIDDEN_MANAGED_POLICIES = (
    "AWSLambdaKinesisExecutionRole",
    "AmazonKinesisReadOnlyAccess",
    "AmazonS3FullAccess",
    "AmazonDynamoDBFullAccess",
    "AmazonSQSFullAccess",
    "CloudWatchFullAccess",
)


def policy_statements(tpl: dict) -> Iterator[tuple[str, dict]]:
    for lid, res in tpl["Resources"].items():
        rtype = res.get("Type")
        p = props(res)
        docs: list[Any] = []
        if rtype == "AWS::IAM::Role":
            docs += [pol["PolicyDocument"] for pol in p.get("Policies", [])]
        elif rtype in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append(p["PolicyDocument"])
        elif rtype == "AWS::Serverless::Function":
            for pol in as_list(p.get("Policies", [])):
                if isinstance(pol, dict) and "Statement" in pol:
                    docs.append(pol)
        for doc in docs:
            for st in as_list(doc["Statement"]):
                # A statement under Fn::If counts with every branch it may
                # take: least privilege must hold whatever the parameters.
                if isinstance(st, dict) and set(st) == {"Fn::If"}:
                    for branch in st["Fn::If"][1:]:
                        if branch != NO_VALUE:
                            yield lid, branch
                else:
                    yield lid, st


def test_no_allow_on_star_resource(tpl: dict) -> None:
    for lid, st in policy_statements(tpl):
        if st.get("Effect") != "Allow":
            continue
        assert "NotResource" not in st and "NotAction" not in st, f"{lid}: NotResource/NotAction is not least privilege"
        resources_ = as_list(st["Resource"])
        if "*" in resources_:
            actions = as_list(st["Action"])
            unexpected = [a for a in actions if a not in ALLOWED_STAR_ACTIONS]
            assert not unexpected, f"{lid} grants {unexpected} on Resource '*'"
        for action in as_list(st["Action"]):
            assert action != "*" and not action.endswith(":*"), f"{lid} grants wildcard action {action}"


def test_no_broad_managed_policies_or_sam_policy_templates(tpl: dict) -> None:
    for lid, res in tpl["Resources"].items():
        p = props(res)
        for arn in as_list(p.get("ManagedPolicyArns", [])):
            for name in FORBIDDEN_MANAGED_POLICIES:
                assert name not in "".join(strings_in(arn)), f"{lid} attaches {name}"
        if res.get("Type") == "AWS::Serverless::Function":
            # A SAM Kinesis event or SAM-generated role would attach
            # AWSLambdaKinesisExecutionRole (Resource "*"): require the
            # explicit role + explicit event source mapping instead.
            assert "Role" in p, "function must use the explicit least-privilege role"
            events = p.get("Events", {})
            assert all(e.get("Type") != "Kinesis" for e in events.values())


def test_role_grants_what_the_function_needs(tpl: dict) -> None:
    """The consumer's role. Its objects statement (everything under
    "<LakePrefix>/") also covers staging: PutObject/GetObject on _staging/,
    GetObject on the _publish/ records, and listing both."""
    fid, fn = the_function(tpl)
    role_id = role_of(tpl, fn)
    granted = granted_actions(tpl, role_id)
    needed = [
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
        "dynamodb:DescribeTable",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ]
    missing = [a for a in needed if a not in granted]
    assert not missing, f"role lacks {missing}"

    # Objects only under "<LakePrefix>/" (or the whole bucket when the prefix is empty).
    failed_id, _ = failed_batch_bucket(tpl)

    def on_the_lake(sts: list) -> list:
        return [st for st in sts if failed_id not in "".join(strings_in(st["Resource"]))
                and not is_getatt(st["Resource"], failed_id, "Arn")]

    for action in ("s3:PutObject", "s3:GetObject"):
        for st in on_the_lake(granted[action]):
            res = st["Resource"]
            assert isinstance(res, dict) and "Fn::If" in res, res
            cond, when_prefix, when_empty = res["Fn::If"]
            assert condition_is_lake_prefix_nonempty(tpl, cond)
            assert when_prefix["Fn::Sub"].endswith("/${LakePrefix}/*")
            assert when_empty["Fn::Sub"].endswith(".Arn}/*")
    # Listing only under "<LakePrefix>/" when a prefix is set.
    for st in on_the_lake(granted["s3:ListBucket"]):
        cond = st["Condition"]["Fn::If"]
        assert condition_is_lake_prefix_nonempty(tpl, cond[0])
        assert cond[1]["StringLike"]["s3:prefix"] == [{"Fn::Sub": "${LakePrefix}/*"}]
    # DynamoDB only on the dedup table.
    table_id, _ = only_resource(tpl, "AWS::DynamoDB::Table")
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem"):
        for st in granted[action]:
            assert as_list(st["Resource"]) == [{"Fn::GetAtt": [table_id, "Arn"]}]


# --------------------------------------------------------------------------
# Iceberg table (TableFormat, IcebergCatalog, EnableGlueCompaction)
# --------------------------------------------------------------------------

CATALOGS = ("lake", "glue", "s3tables", "rest")
TABLE_BUCKET = "arn:aws:s3tables:eu-west-1:123456789012:bucket/lake-tables"
ICEBERG_ENV = ("ICEBERG_REST_URI", "ICEBERG_SIGV4_SERVICE", "ICEBERG_WAREHOUSE")


def iceberg(catalog: str, **overrides: Any) -> dict[str, Any]:
    """Parameter overrides of an Iceberg stack in `catalog` that the rules accept."""
    values: dict[str, Any] = {"TableFormat": "iceberg", "IcebergCatalog": catalog}
    if catalog == "s3tables":
        values["IcebergWarehouse"] = TABLE_BUCKET
    if catalog == "rest":
        values["IcebergRestUri"] = "https://catalog.example.com/api/catalog"
        values["IcebergWarehouse"] = "s3://warehouse"
    values.update(overrides)
    return values


def publisher_env(deployed: dict) -> dict:
    _, publisher = the_publisher(deployed)
    return props(publisher)["Environment"]["Variables"]


def publisher_grants(deployed: dict) -> dict[str, list]:
    _, publisher = the_publisher(deployed)
    return granted_actions(deployed, role_of(deployed, publisher))


def sub_with(values: dict[str, str], node: Any) -> str:
    """A plain Fn::Sub string with the parameters' values put in (the AWS::
    pseudo parameters stay as ${AWS::...})."""
    text = node["Fn::Sub"]
    assert isinstance(text, str), node
    return re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: values[m.group(1)], text)


def service_actions(deployed: dict, prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(logical id, action) of every Allow of these services, in any role."""
    return [(lid, a) for lid, st in policy_statements(deployed) if st["Effect"] == "Allow"
            for a in as_list(st["Action"]) if a.startswith(prefixes)]


def test_iceberg_parameters(tpl: dict) -> None:
    params = tpl["Parameters"]
    assert params["TableFormat"]["Default"] == "hive"
    assert params["TableFormat"]["AllowedValues"] == ["hive", "iceberg"]
    assert params["IcebergCatalog"]["Default"] == "glue"
    assert params["IcebergCatalog"]["AllowedValues"] == list(CATALOGS)
    assert params["IcebergRestUri"]["Default"] == "" and params["IcebergWarehouse"]["Default"] == ""
    assert params["IcebergNamespace"]["Default"] == "kinesis_lake"
    assert params["IcebergTableName"]["Default"] == "events"
    for name in ("IcebergNamespace", "IcebergTableName"):
        pattern = re.compile(params[name]["AllowedPattern"])
        assert pattern.fullmatch("kinesis_lake") and not pattern.fullmatch("Events") and not pattern.fullmatch("")
        assert not pattern.fullmatch("a/b") and not pattern.fullmatch("a*"), name
    compaction = params["EnableGlueCompaction"]
    assert compaction["Default"] == "false" and compaction["AllowedValues"] == ["true", "false"]
    # The operator must learn that the table exists only after the first
    # publication, hence a second deployment.
    text = " ".join(compaction["Description"].split())
    for phrase in ("first publication", "deploy again with true"):
        assert phrase in text, phrase
    groups = tpl["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    (group,) = [g["Parameters"] for g in groups if g["Label"]["default"] == "Iceberg table"]
    assert group == ["TableFormat", "IcebergCatalog", "IcebergRestUri", "IcebergWarehouse", "IcebergNamespace",
                     "IcebergTableName", "EnableGlueCompaction"]


def test_hive_default_has_nothing_of_iceberg(tpl: dict) -> None:
    """TableFormat hive (the default), whatever the Iceberg parameters say: no
    catalog variables, no Glue/S3 Tables/Lake Formation grant, no _iceberg/
    grant, no optimizer or its role; the Hive table `events` is there."""
    for overrides in ({}, {"IcebergCatalog": "glue", "EnableGlueCompaction": "true"},
                      {"IcebergCatalog": "s3tables", "IcebergWarehouse": TABLE_BUCKET},
                      {"IcebergCatalog": "rest", "IcebergRestUri": "https://catalog.example.com"}):
        deployed = deploy(tpl, **overrides)
        env = publisher_env(deployed)
        assert is_ref_to(env["TABLE_FORMAT"], "TableFormat")
        assert not set(ICEBERG_ENV) & set(env), (overrides, sorted(env))
        assert not service_actions(deployed, ("glue:", "s3tables:", "lakeformation:")), overrides
        assert "_iceberg" not in "".join(strings_in(deployed["Resources"])), overrides
        assert not resources(deployed, "AWS::Glue::TableOptimizer"), overrides
        assert not [lid for lid, r in resources(deployed, "AWS::IAM::Role").items()
                    if "glue.amazonaws.com" in "".join(strings_in(props(r)["AssumeRolePolicyDocument"]))]
        only_resource(deployed, "AWS::Glue::Table")
        assert "IcebergTable" not in deployed["Outputs"]
    assert publisher_grants(deploy(tpl)).keys() == publisher_grants(deploy(tpl, IcebergCatalog="lake")).keys()


def test_iceberg_with_glue_gets_the_glue_endpoint(tpl: dict) -> None:
    """The default catalog: Glue's Iceberg REST endpoint of the stack's region,
    SigV4 for glue, the account's catalog as the warehouse."""
    env = publisher_env(deploy(tpl, TableFormat="iceberg"))
    assert is_ref_to(env["TABLE_FORMAT"], "TableFormat")
    assert env["ICEBERG_REST_URI"] == {"Fn::Sub": "https://glue.${AWS::Region}.amazonaws.com/iceberg"}
    assert env["ICEBERG_SIGV4_SERVICE"] == "glue"
    assert env["ICEBERG_WAREHOUSE"] == {"Ref": "AWS::AccountId"}
    assert is_ref_to(env["ICEBERG_NAMESPACE"], "IcebergNamespace")
    assert is_ref_to(env["ICEBERG_TABLE"], "IcebergTableName")
    assert "ICEBERG_CREDENTIAL" not in env


def test_iceberg_catalog_variables(tpl: dict) -> None:
    s3tables = publisher_env(deploy(tpl, **iceberg("s3tables")))
    assert s3tables["ICEBERG_REST_URI"] == {"Fn::Sub": "https://s3tables.${AWS::Region}.amazonaws.com/iceberg"}
    assert s3tables["ICEBERG_SIGV4_SERVICE"] == "s3tables"
    assert is_ref_to(s3tables["ICEBERG_WAREHOUSE"], "IcebergWarehouse")

    rest = publisher_env(deploy(tpl, **iceberg("rest")))
    assert is_ref_to(rest["ICEBERG_REST_URI"], "IcebergRestUri")
    assert is_ref_to(rest["ICEBERG_WAREHOUSE"], "IcebergWarehouse")
    assert "ICEBERG_SIGV4_SERVICE" not in rest, "another REST server's requests are not signed"

    # The catalog in the lake: no service at all.
    lake = publisher_env(deploy(tpl, **iceberg("lake")))
    assert not set(ICEBERG_ENV) & set(lake), sorted(lake)
    for env in (s3tables, rest, lake):
        assert is_ref_to(env["TABLE_FORMAT"], "TableFormat")
        assert is_ref_to(env["ICEBERG_NAMESPACE"], "IcebergNamespace")
        assert is_ref_to(env["ICEBERG_TABLE"], "IcebergTableName")
    # The consumer never commits: it gets none of it.
    for catalog in CATALOGS:
        _, consumer = the_function(deploy(tpl, **iceberg(catalog)))
        assert not [k for k in props(consumer)["Environment"]["Variables"] if k.startswith(("ICEBERG_", "TABLE_"))]


def test_glue_grants_name_only_the_configured_database_and_table(tpl: dict) -> None:
    values = {"TableFormat": "iceberg", "IcebergNamespace": "analytics", "IcebergTableName": "clicks"}
    deployed = deploy(tpl, **values)
    granted = publisher_grants(deployed)
    glue = {a for a in granted if a.startswith("glue:")}
    assert glue == {"glue:GetCatalog", "glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable",
                    "glue:CreateTable", "glue:UpdateTable"}, sorted(glue)
    arn = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:"
    resolved = parameter_values(tpl, values)
    for action in glue:
        arns = {sub_with(resolved, r) for st in granted[action] for r in as_list(st["Resource"])}
        assert arns == {arn + "catalog", arn + "database/analytics", arn + "table/analytics/clicks"}, action
    # Lake Formation's data access (no resource type), nothing else on "*".
    assert [st["Resource"] for st in granted["lakeformation:GetDataAccess"]] == ["*"]
    assert not {a for a in granted if a.startswith(("s3tables:", "dynamodb:", "kinesis:"))}


def test_s3tables_grants_name_only_the_table_bucket(tpl: dict) -> None:
    granted = publisher_grants(deploy(tpl, **iceberg("s3tables")))
    s3tables = {a for a in granted if a.startswith("s3tables:")}
    assert s3tables == {
        "s3tables:GetTableBucket", "s3tables:GetNamespace", "s3tables:CreateNamespace", "s3tables:GetTable",
        "s3tables:CreateTable", "s3tables:GetTableMetadataLocation", "s3tables:UpdateTableMetadataLocation",
        "s3tables:PutTableData", "s3tables:GetTableData",
    }, sorted(s3tables)
    for action in s3tables:
        for st in granted[action]:
            assert as_list(st["Resource"]) == [{"Fn::Sub": "${IcebergWarehouse}"},
                                               {"Fn::Sub": "${IcebergWarehouse}/table/*"}], action
    assert not {a for a in granted if a.startswith(("glue:", "lakeformation:"))}


def test_iceberg_metadata_grants(tpl: dict) -> None:
    """Any catalog: read and write the table's metadata folder under the lake
    prefix (<LakePrefix>/_iceberg/); the lake catalog also lists it. Nothing
    else of the publisher's S3 grants changes, and still no deletes."""
    hive = publisher_grants(deploy_any_prefix(tpl))
    for catalog in CATALOGS:
        deployed = deploy_any_prefix(tpl, **iceberg(catalog))
        granted = publisher_grants(deployed)
        assert "s3:DeleteObject" not in granted
        for action in ("s3:GetObject", "s3:PutObject"):
            paths = {lake_object_arn(deployed, r) for st in granted[action] for r in as_list(st["Resource"])}
            before = {lake_object_arn(deployed, r) for st in hive[action] for r in as_list(st["Resource"])}
            assert paths == before | {"${Dir}_iceberg/*"}, (catalog, action, paths)
        lists = [st for st in granted["s3:ListBucket"]]
        iceberg_lists = [st for st in lists if "_iceberg" in "".join(strings_in(st.get("Condition", {})))]
        if catalog == "lake":
            (st,) = iceberg_lists
            cond = st["Condition"]["Fn::If"]
            assert condition_is_lake_prefix_nonempty(tpl, cond[0])
            assert cond[1]["StringLike"]["s3:prefix"] == [{"Fn::Sub": "${LakePrefix}/_iceberg/*"}]
            assert cond[2] == NO_VALUE
        else:
            assert not iceberg_lists, catalog


def test_star_resource_only_with_the_glue_catalog(tpl: dict) -> None:
    """Resource "*" (lakeformation:GetDataAccess) only with an Iceberg table in Glue."""
    for catalog in CATALOGS:
        for compaction in ("true", "false"):
            deployed = deploy(tpl, **iceberg(catalog, EnableGlueCompaction=compaction))
            star = [lid for lid, st in policy_statements(deployed) if "*" in as_list(st["Resource"])]
            assert bool(star) == (catalog == "glue"), (catalog, star)
    assert not [lid for lid, st in policy_statements(deploy(tpl)) if "*" in as_list(st["Resource"])]


def test_glue_optimizer_only_when_its_three_conditions_hold(tpl: dict) -> None:
    for table_format in ("hive", "iceberg"):
        for catalog in CATALOGS:
            for compaction in ("true", "false"):
                deployed = deploy(tpl, **iceberg(catalog, TableFormat=table_format, EnableGlueCompaction=compaction))
                optimizers = resources(deployed, "AWS::Glue::TableOptimizer")
                wanted = (table_format, catalog, compaction) == ("iceberg", "glue", "true")
                assert bool(optimizers) == wanted, (table_format, catalog, compaction, sorted(optimizers))
                glue_roles = [lid for lid, r in resources(deployed, "AWS::IAM::Role").items()
                              if "glue.amazonaws.com" in "".join(strings_in(props(r)["AssumeRolePolicyDocument"]))]
                assert bool(glue_roles) == wanted, glue_roles


def test_glue_optimizer(tpl: dict) -> None:
    values = {"TableFormat": "iceberg", "EnableGlueCompaction": "true",
              "IcebergNamespace": "analytics", "IcebergTableName": "clicks"}
    deployed = deploy_any_prefix(tpl, **values)
    _, optimizer = only_resource(deployed, "AWS::Glue::TableOptimizer")
    p = props(optimizer)
    assert p["Type"] == "compaction"
    assert p["CatalogId"] == {"Ref": "AWS::AccountId"}
    assert is_ref_to(p["DatabaseName"], "IcebergNamespace")
    assert is_ref_to(p["TableName"], "IcebergTableName")
    config = p["TableOptimizerConfiguration"]
    assert is_true(config["Enabled"])
    role_id, attr = config["RoleArn"]["Fn::GetAtt"]
    assert attr == "Arn"
    role = deployed["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    _, publisher = the_publisher(deployed)
    assert role_id != role_of(deployed, publisher), "the optimizer needs a role of its own"
    (trust,) = as_list(props(role)["AssumeRolePolicyDocument"]["Statement"])
    assert trust["Principal"] == {"Service": "glue.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"

    granted = granted_actions(deployed, role_id)
    assert set(granted) == {
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
        "glue:GetTable", "glue:UpdateTable",
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
        "lakeformation:GetDataAccess",
    }, sorted(granted)
    # S3: the lake prefix only.
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        for st in granted[action]:
            cond, when_prefix, when_empty = st["Resource"]["Fn::If"]
            assert condition_is_lake_prefix_nonempty(tpl, cond)
            assert when_prefix["Fn::Sub"].endswith(".Arn}/${LakePrefix}/*")
            assert when_empty["Fn::Sub"].endswith(".Arn}/*")
    for st in granted["s3:ListBucket"]:
        assert st["Condition"]["Fn::If"][1]["StringLike"]["s3:prefix"] == [{"Fn::Sub": "${LakePrefix}/*"}]
    # Glue: this table only.
    arn = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:"
    resolved = parameter_values(tpl, values)
    for action in ("glue:GetTable", "glue:UpdateTable"):
        arns = {sub_with(resolved, r) for st in granted[action] for r in as_list(st["Resource"])}
        assert arns == {arn + "catalog", arn + "database/analytics", arn + "table/analytics/clicks"}, action
    # Logs: the compaction log groups only.
    for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"):
        for st in granted[action]:
            (res,) = as_list(st["Resource"])
            assert res["Fn::Sub"].endswith(":log-group:/aws-glue/iceberg-compaction/logs:*"), res


def test_iceberg_in_glue_replaces_the_hive_table_of_the_same_name(tpl: dict) -> None:
    """Two Glue tables cannot share a name: an Iceberg table in Glue named like
    the Hive table `events` of the stack's database (the defaults) replaces it."""
    deployed = deploy(tpl, TableFormat="iceberg")
    assert not resources(deployed, "AWS::Glue::Table")
    assert is_ref_to(deployed["Outputs"]["GlueTableName"]["Value"], "IcebergTableName")
    # ... and only then.
    for overrides in ({"IcebergTableName": "events_iceberg"}, {"IcebergNamespace": "iceberg"},
                      {"IcebergCatalog": "lake"}, {"IcebergCatalog": "rest", "IcebergRestUri": "https://c.example.com"},
                      {"IcebergCatalog": "s3tables", "IcebergWarehouse": TABLE_BUCKET}):
        deployed = deploy(tpl, TableFormat="iceberg", **overrides)
        table_id, _ = only_resource(deployed, "AWS::Glue::Table")
        assert is_ref_to(deployed["Outputs"]["GlueTableName"]["Value"], table_id), overrides
        assert deployed["Outputs"]["IcebergTable"]["Value"] == {
            "Fn::Sub": "${IcebergCatalog}: ${IcebergNamespace}.${IcebergTableName}"}


def test_iceberg_rules(tpl: dict) -> None:
    """Iceberg needs staging (the publisher is the only committer); S3 Tables
    needs the table bucket; another REST server needs its URL."""
    for catalog in CATALOGS:
        assert not rule_violations(tpl, **iceberg(catalog)), catalog
        (violation,) = rule_violations(tpl, **iceberg(catalog, PublishWindowSeconds=0))
        assert "TableFormat iceberg needs PublishWindowSeconds > 0" in " ".join(violation.split())
    (violation,) = rule_violations(tpl, **iceberg("s3tables", IcebergWarehouse=""))
    assert "needs IcebergWarehouse" in violation
    (violation,) = rule_violations(tpl, **iceberg("rest", IcebergRestUri=""))
    assert "needs IcebergRestUri" in violation
    # An empty warehouse is fine for another REST server; hive ignores all of it.
    assert not rule_violations(tpl, **iceberg("rest", IcebergWarehouse=""))
    assert not rule_violations(tpl, TableFormat="hive", IcebergCatalog="s3tables", PublishWindowSeconds=0)


@pytest.mark.parametrize("catalog", CATALOGS)
@pytest.mark.parametrize("compaction", ["true", "false"])
@pytest.mark.parametrize("prefix", ["lake", ""], ids=["prefix", "no-prefix"])
def test_every_reference_resolves_with_iceberg(tpl: dict, catalog: str, compaction: str, prefix: str) -> None:
    overrides = iceberg(catalog, EnableGlueCompaction=compaction, LakePrefix=prefix)
    deployed = deploy(tpl, **overrides)
    known = set(deployed["Resources"]) | set(deployed["Parameters"])
    for section in ("Resources", "Outputs"):
        for lid, item in deployed[section].items():
            dangling = {r for r in referenced_ids(item) if r not in known and not r.startswith("AWS::")}
            dangling |= {d for d in as_list(item.get("DependsOn", [])) if d not in deployed["Resources"]}
            assert not dangling, f"{lid} names {sorted(dangling)}, absent with {overrides}"



# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------


def test_outputs(tpl: dict) -> None:
    outputs = tpl["Outputs"]
    for name in (
        "LakeBucketName",
        "DedupTableName",
        "StreamName",
        "StreamArn",
        "GlueDatabaseName",
        "GlueTableName",
        "FunctionName",
        "PublisherFunctionName",
        "FailedBatchBucketName",
        "ExampleAthenaQuery",
    ):
        assert name in outputs, name
    pid, _ = the_publisher(tpl)
    assert is_ref_to(outputs["PublisherFunctionName"]["Value"], pid)
    fid, _ = failed_batch_bucket(tpl)
    assert is_ref_to(outputs["FailedBatchBucketName"]["Value"], fid)
    query = "".join(strings_in(outputs["ExampleAthenaQuery"]["Value"]))
    assert "event_type='payment'" in query and "event_subtype='order'" in query


# --------------------------------------------------------------------------
# cfn-lint
# --------------------------------------------------------------------------


def find_cfn_lint() -> str | None:
    beside = Path(sys.executable).parent / "cfn-lint"
    if beside.is_file():
        return str(beside)
    return shutil.which("cfn-lint")


def test_cfn_lint_clean() -> None:
    exe = find_cfn_lint()
    if exe is None:
        pytest.fail("cfn-lint not found next to the Python interpreter nor on PATH (install it: pip install cfn-lint)")
    proc = subprocess.run(
        [exe, "--", str(TEMPLATE_PATH)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"cfn-lint exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
