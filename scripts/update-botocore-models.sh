#!/usr/bin/env bash
# Refreshes the vendored botocore service models (documentation stripped) from an installed
# botocore or awscli. The generated shapes in crates/api and the contract test both read them.
# Usage: scripts/update-botocore-models.sh [python]   (defaults to python3)
set -euo pipefail
py=${1:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
"$py" - "$here/crates/api/models" <<'PY'
import gzip, json, os, sys, importlib
out = sys.argv[1]
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
for svc, ver in (("ecs", "2014-11-13"), ("ecr", "2015-09-21"), ("logs", "2014-03-28"), ("cloudwatch", "2010-08-01"), ("elbv2", "2015-12-01")):
    src = os.path.join(root, svc, ver, "service-2.json")
    if not os.path.exists(src):
        src += ".gz"  # newer botocore ships its models gzipped
    opener = gzip.open if src.endswith(".gz") else open
    with opener(src, "rt") as f:
        model = strip(json.load(f))
    dst = os.path.join(out, f"{svc}-{ver}.json")
    with open(dst, "w") as f:
        json.dump(model, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{dst} from botocore {version}")
PY
