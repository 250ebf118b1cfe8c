#!/usr/bin/env bash
# Refreshes the vendored botocore service models (documentation stripped) from an installed
# botocore or awscli. The generated shapes in crates/api and the contract test both read them.
# EC2's model is large (765 operations): only the VPC part Berth serves is kept, with the shapes
# it reaches. Usage: scripts/update-botocore-models.sh [python [service...]]
# (python defaults to python3; services to all of them).
set -euo pipefail
py=${1:-python3}
shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
"$py" - "$here/crates/api/models" "$@" <<'PY'
import gzip, json, os, sys, importlib
out = sys.argv[1]
only = set(sys.argv[2:])
# The EC2 operations Berth serves (crates/api/build.rs lists them too).
EC2_OPERATIONS = [
    "AuthorizeSecurityGroupEgress", "AuthorizeSecurityGroupIngress", "CreateSecurityGroup",
    "CreateSubnet", "CreateTags", "CreateVpc", "DeleteSecurityGroup", "DeleteSubnet",
    "DeleteTags", "DeleteVpc", "DescribeAvailabilityZones", "DescribeNetworkInterfaces",
    "DescribeSecurityGroupRules", "DescribeSecurityGroups", "DescribeSubnets", "DescribeTags",
    "DescribeVpcAttribute", "DescribeVpcs", "ModifyVpcAttribute", "RevokeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
]
def prune(model, operations):
    keep, stack = set(), []
    for op in operations:
        for io in ("input", "output"):
            if io in model["operations"][op]:
                stack.append(model["operations"][op][io]["shape"])
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        shape = model["shapes"][name]
        for k in ("member", "key", "value"):
            if k in shape:
                stack.append(shape[k]["shape"])
        stack.extend(m["shape"] for m in shape.get("members", {}).values())
    model["operations"] = {op: model["operations"][op] for op in operations}
    model["shapes"] = {name: model["shapes"][name] for name in sorted(keep)}
    return model
for mod in ("awscli.botocore", "botocore"):
    try:
        m = importlib.import_module(mod)
        break
    except ImportError:
        continue
root = os.path.join(os.path.dirname(m.__file__), "data")
version = getattr(m, "__version__", None) or importlib.import_module("botocore").__version__
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k != "documentation"}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
for svc, ver in (("ecs", "2014-11-13"), ("ecr", "2015-09-21"), ("logs", "2014-03-28"), ("cloudwatch", "2010-08-01"), ("elbv2", "2015-12-01"), ("ec2", "2016-11-15")):
    if only and svc not in only:
        continue
    src = os.path.join(root, svc, ver, "service-2.json")
    if not os.path.exists(src):
        src += ".gz"  # newer botocore ships its models gzipped
    opener = gzip.open if src.endswith(".gz") else open
    with opener(src, "rt") as f:
        model = strip(json.load(f))
    if svc == "ec2":
        model = prune(model, EC2_OPERATIONS)
    dst = os.path.join(out, f"{svc}-{ver}.json")
    with open(dst, "w") as f:
        json.dump(model, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{dst} from botocore {version}")
PY
