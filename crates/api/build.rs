//! Generates the ECS, ECR and CloudWatch Logs wire shapes from botocore's service models (`models/*.json`).
//!
//! Every structure reachable from an implemented operation becomes a serde struct whose members
//! keep botocore's names and types, so "accept and return every member the model defines" holds
//! by construction. To implement a new operation, add its name to `ECS`, `ECR` or `LOGS`.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The ECS operations Berth serves. Extending the API starts here.
const ECS: &[&str] = &[
    "CreateCluster",
    "CreateTaskSet",
    "DeleteTaskSet",
    "DescribeTaskSets",
    "UpdateTaskSet",
    "UpdateServicePrimaryTaskSet",
    "CreateCapacityProvider",
    "DeleteCapacityProvider",
    "DescribeCapacityProviders",
    "PutClusterCapacityProviders",
    "CreateService",
    "DeleteAccountSetting",
    "DeleteAttributes",
    "DeleteCluster",
    "DeleteService",
    "DeleteTaskDefinitions",
    "DeregisterContainerInstance",
    "DeregisterTaskDefinition",
    "DescribeClusters",
    "DescribeContainerInstances",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
    "DescribeServices",
    "DescribeTaskDefinition",
    "DescribeTasks",
    "GetTaskProtection",
    "ListAccountSettings",
    "ListAttributes",
    "ListClusters",
    "ListContainerInstances",
    "ListServiceDeployments",
    "ListServices",
    "ListTagsForResource",
    "ListTaskDefinitionFamilies",
    "ListTaskDefinitions",
    "ListTasks",
    "PutAccountSetting",
    "PutAccountSettingDefault",
    "PutAttributes",
    "RegisterContainerInstance",
    "RegisterTaskDefinition",
    "RunTask",
    "StartTask",
    "StopServiceDeployment",
    "StopTask",
    "TagResource",
    "UntagResource",
    "UpdateCapacityProvider",
    "UpdateCluster",
    "UpdateClusterSettings",
    "UpdateContainerInstancesState",
    "UpdateService",
    "UpdateTaskProtection",
];

/// The CloudWatch Logs operations Berth serves.
const LOGS: &[&str] = &[
    "CreateLogGroup",
    "CreateLogStream",
    "DeleteLogGroup",
    "DeleteLogStream",
    "DeleteMetricFilter",
    "DeleteRetentionPolicy",
    "DescribeLogGroups",
    "DescribeLogStreams",
    "DescribeMetricFilters",
    "FilterLogEvents",
    "GetLogEvents",
    "ListTagsForResource",
    "ListTagsLogGroup",
    "PutLogEvents",
    "PutMetricFilter",
    "PutRetentionPolicy",
    "TagLogGroup",
    "TagResource",
    "TestMetricFilter",
    "UntagLogGroup",
    "UntagResource",
];

/// The CloudWatch (metrics) operations Berth serves.
const CLOUDWATCH: &[&str] = &[
    "GetMetricData",
    "GetMetricStatistics",
    "ListMetrics",
    "PutMetricData",
];

/// The Elastic Load Balancing v2 operations Berth serves.
const ELBV2: &[&str] = &[
    "AddTags",
    "CreateListener",
    "CreateLoadBalancer",
    "CreateRule",
    "CreateTargetGroup",
    "DeleteListener",
    "DeleteLoadBalancer",
    "DeleteRule",
    "DeleteTargetGroup",
    "DeregisterTargets",
    "DescribeListeners",
    "DescribeLoadBalancerAttributes",
    "DescribeLoadBalancers",
    "DescribeRules",
    "DescribeTags",
    "DescribeTargetGroupAttributes",
    "DescribeTargetGroups",
    "DescribeTargetHealth",
    "ModifyListener",
    "ModifyLoadBalancerAttributes",
    "ModifyRule",
    "ModifyTargetGroup",
    "ModifyTargetGroupAttributes",
    "RegisterTargets",
    "RemoveTags",
    "SetRulePriorities",
];

/// The EC2 operations Berth serves: the VPC part (scripts/update-botocore-models.sh keeps only
/// these in the vendored model).
const EC2: &[&str] = &[
    "AuthorizeSecurityGroupEgress",
    "AuthorizeSecurityGroupIngress",
    "CreateSecurityGroup",
    "CreateSubnet",
    "CreateTags",
    "CreateVpc",
    "DeleteSecurityGroup",
    "DeleteSubnet",
    "DeleteTags",
    "DeleteVpc",
    "DescribeAvailabilityZones",
    "DescribeNetworkInterfaces",
    "DescribeSecurityGroupRules",
    "DescribeSecurityGroups",
    "DescribeSubnets",
    "DescribeTags",
    "DescribeVpcAttribute",
    "DescribeVpcs",
    "ModifyVpcAttribute",
    "RevokeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
];

/// The ECR operations Berth serves.
const ECR: &[&str] = &[
    "BatchCheckLayerAvailability",
    "BatchDeleteImage",
    "BatchGetImage",
    "BatchGetRepositoryScanningConfiguration",
    "CompleteLayerUpload",
    "CreatePullThroughCacheRule",
    "CreateRepository",
    "CreateRepositoryCreationTemplate",
    "DeleteLifecyclePolicy",
    "DeletePullThroughCacheRule",
    "DeleteRegistryPolicy",
    "DeleteRepository",
    "DeleteRepositoryCreationTemplate",
    "DeleteRepositoryPolicy",
    "DescribeImageReplicationStatus",
    "DescribeImageScanFindings",
    "DescribeImages",
    "DescribePullThroughCacheRules",
    "DescribeRegistry",
    "DescribeRepositories",
    "DescribeRepositoryCreationTemplates",
    "GetAuthorizationToken",
    "GetDownloadUrlForLayer",
    "GetLifecyclePolicy",
    "GetLifecyclePolicyPreview",
    "GetRegistryPolicy",
    "GetRegistryScanningConfiguration",
    "GetRepositoryPolicy",
    "InitiateLayerUpload",
    "ListImages",
    "ListTagsForResource",
    "PutImage",
    "PutImageScanningConfiguration",
    "PutImageTagMutability",
    "PutLifecyclePolicy",
    "PutRegistryPolicy",
    "PutRegistryScanningConfiguration",
    "PutReplicationConfiguration",
    "SetRepositoryPolicy",
    "StartLifecyclePolicyPreview",
    "TagResource",
    "UntagResource",
    "UpdatePullThroughCacheRule",
    "UpdateRepositoryCreationTemplate",
    "UploadLayerPart",
    "ValidatePullThroughCacheRule",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this"));
    println!("cargo:rerun-if-changed=build.rs");
    // CloudWatch speaks CBOR (Smithy RPC v2) to the current AWS CLI: its shapes also encode
    // themselves as CBOR, timestamps tagged.
    for (model_file, out_file, request, implemented, cbor) in [
        ("ecs-2014-11-13.json", "ecs.rs", "EcsRequest", ECS, false),
        ("ecr-2015-09-21.json", "ecr.rs", "EcrRequest", ECR, false),
        (
            "logs-2014-03-28.json",
            "logs.rs",
            "LogsRequest",
            LOGS,
            false,
        ),
        (
            "cloudwatch-2010-08-01.json",
            "cloudwatch.rs",
            "CloudWatchRequest",
            CLOUDWATCH,
            true,
        ),
        (
            "elbv2-2015-12-01.json",
            "elbv2.rs",
            "ElbRequest",
            ELBV2,
            false,
        ),
        ("ec2-2016-11-15.json", "ec2.rs", "Ec2Request", EC2, false),
    ] {
        let model_path = manifest.join("models").join(model_file);
        println!("cargo:rerun-if-changed={}", model_path.display());
        let text = std::fs::read_to_string(&model_path).expect("vendored model is readable");
        let model: Value = serde_json::from_str(&text).expect("vendored model is JSON");
        let code = generate(&model, request, implemented, cbor);
        std::fs::write(out_dir.join(out_file), code).expect("OUT_DIR is writable");
    }
}

fn generate(model: &Value, request: &str, implemented: &[&str], cbor: bool) -> String {
    let shapes = model["shapes"].as_object().expect("shapes");
    let operations = model["operations"].as_object().expect("operations");
    for op in implemented {
        assert!(
            operations.contains_key(*op),
            "{op} is not an operation of the model"
        );
    }

    // Structures reachable from the implemented operations.
    let mut reachable = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for op in implemented {
        for io in ["input", "output"] {
            if let Some(s) = operations[*op][io]["shape"].as_str() {
                stack.push(s.to_string());
            }
        }
    }
    while let Some(name) = stack.pop() {
        let shape = &shapes[&name];
        match shape["type"].as_str() {
            Some("structure") if reachable.insert(name.clone()) => {
                for m in members(shape).values() {
                    stack.push(m["shape"].as_str().expect("member shape").to_string());
                }
            }
            Some("list") => stack.push(shape["member"]["shape"].as_str().expect("list").into()),
            Some("map") => stack.push(shape["value"]["shape"].as_str().expect("map").into()),
            _ => {}
        }
    }

    let mut out = String::new();
    out.push_str("// @generated by crates/api/build.rs from a botocore model. Do not edit.\n\n");
    for name in &reachable {
        let shape = &shapes[name];
        let required: BTreeSet<&str> = shape["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        writeln!(
            out,
            "#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]"
        )
        .ok();
        writeln!(out, "pub struct {name} {{").ok();
        for (member, spec) in members(shape) {
            let ty = rust_type(shapes, spec["shape"].as_str().expect("member shape"));
            let field = field_name(member.as_str());
            writeln!(
                out,
                "    #[serde(rename = \"{member}\", default, skip_serializing_if = \"Option::is_none\")]\n    pub {field}: Option<{ty}>,"
            )
            .ok();
        }
        writeln!(out, "}}\n").ok();
        // Required members, checked recursively so the error names the full path.
        writeln!(out, "impl Shape for {name} {{").ok();
        writeln!(
            out,
            "    fn check_required(&self, path: &str) -> Result<(), String> {{"
        )
        .ok();
        writeln!(out, "        let _ = path;").ok();
        for (member, spec) in members(shape) {
            let field = field_name(member.as_str());
            let target = spec["shape"].as_str().expect("member shape");
            if required.contains(member.as_str()) {
                writeln!(
                    out,
                    "        if self.{field}.is_none() {{ return Err(join(path, {member:?})); }}"
                )
                .ok();
            }
            match nested_struct(shapes, target) {
                Nested::Struct => writeln!(out, "        if let Some(v) = &self.{field} {{ v.check_required(&join(path, {member:?}))?; }}").ok(),
                Nested::List => writeln!(out, "        if let Some(v) = &self.{field} {{ for (i, x) in v.iter().enumerate() {{ x.check_required(&format!(\"{{}}[{{i}}]\", join(path, {member:?})))?; }} }}").ok(),
                Nested::Map => writeln!(out, "        if let Some(v) = &self.{field} {{ for (k, x) in v {{ x.check_required(&format!(\"{{}}.{{k}}\", join(path, {member:?})))?; }} }}").ok(),
                Nested::None => None,
            };
        }
        writeln!(out, "        Ok(())\n    }}\n}}\n").ok();
        if cbor {
            write_to_cbor(&mut out, shapes, name, shape);
        }
    }

    // Enumerations, as constant lists of their values.
    out.push_str("/// The values of every string enumeration in the model.\npub mod enums {\n");
    let mut enums: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, shape) in shapes {
        if let Some(values) = shape["enum"].as_array() {
            enums.insert(name, values.iter().filter_map(Value::as_str).collect());
        }
    }
    for (name, values) in &enums {
        let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        writeln!(
            out,
            "    pub const {}: &[&str] = &[{}];",
            screaming(name),
            list.join(", ")
        )
        .ok();
    }
    out.push_str("}\n\n");

    // The request enum and its parser.
    out.push_str("/// One parsed request: the operation and its typed input.\n");
    writeln!(
        out,
        "#[derive(Debug, Clone, PartialEq)]\npub enum {request} {{"
    )
    .ok();
    for op in implemented {
        let input = operations[*op]["input"]["shape"].as_str().expect("input");
        writeln!(out, "    {op}({input}),").ok();
    }
    out.push_str("}\n\n");
    writeln!(out, "impl {request} {{").ok();
    out.push_str("    /// The operation's name, as in `X-Amz-Target`.\n");
    out.push_str("    pub fn operation(&self) -> &'static str {\n        match self {\n");
    for op in implemented {
        writeln!(out, "            {request}::{op}(_) => {op:?},").ok();
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// Parses `body` as the input of `operation`; `Ok(None)` for an operation Berth does not serve.\n");
    writeln!(out, "    pub fn parse(operation: &str, body: &[u8]) -> Result<Option<{request}>, ParseError> {{").ok();
    out.push_str("        Ok(Some(match operation {\n");
    for op in implemented {
        writeln!(
            out,
            "            {op:?} => {request}::{op}(from_body(body)?),"
        )
        .ok();
    }
    out.push_str("            _ => return Ok(None),\n        }))\n    }\n}\n\n");

    let all: Vec<String> = operations.keys().map(|k| format!("{k:?}")).collect();
    writeln!(
        out,
        "/// Every operation in the model, served or not.\npub const ALL_OPERATIONS: &[&str] = &[{}];",
        all.join(", ")
    )
    .ok();
    out
}

/// `impl ToCbor`: each member present, in model order, encoded by its shape's type.
fn write_to_cbor(out: &mut String, shapes: &Map<String, Value>, name: &str, shape: &Value) {
    let members = members(shape);
    writeln!(out, "impl crate::cbor::ToCbor for {name} {{").ok();
    writeln!(
        out,
        "    fn to_cbor(&self, e: &mut crate::cbor::Encoder) {{"
    )
    .ok();
    let count: Vec<String> = members
        .keys()
        .map(|m| format!("usize::from(self.{}.is_some())", field_name(m)))
        .collect();
    if count.is_empty() {
        writeln!(out, "        e.map(0);").ok();
    } else {
        writeln!(out, "        e.map({});", count.join(" + ")).ok();
    }
    for (member, spec) in &members {
        let field = field_name(member);
        let target = spec["shape"].as_str().expect("member shape");
        writeln!(
            out,
            "        if let Some(v) = &self.{field} {{ e.text({member:?}); {} }}",
            cbor_expr(shapes, target, "v", 0)
        )
        .ok();
    }
    writeln!(out, "    }}\n}}\n").ok();
}

/// Code that encodes `var` (a reference to a value of shape `name`) with encoder `e`.
fn cbor_expr(shapes: &Map<String, Value>, name: &str, var: &str, depth: usize) -> String {
    let shape = &shapes[name];
    match shape["type"].as_str().expect("shape type") {
        "structure" => format!("crate::cbor::ToCbor::to_cbor({var}, e);"),
        "list" => {
            let x = format!("x{depth}");
            let inner = cbor_expr(
                shapes,
                shape["member"]["shape"].as_str().expect("list member"),
                &x,
                depth + 1,
            );
            format!("e.array({var}.len()); for {x} in {var}.iter() {{ {inner} }}")
        }
        "map" => {
            let (k, v) = (format!("k{depth}"), format!("v{depth}"));
            let inner = cbor_expr(
                shapes,
                shape["value"]["shape"].as_str().expect("map value"),
                &v,
                depth + 1,
            );
            format!("e.map({var}.len()); for ({k}, {v}) in {var}.iter() {{ e.text({k}); {inner} }}")
        }
        "string" => format!("e.text({var});"),
        "blob" => format!("e.bytes(&crate::cbor::unbase64({var}));"),
        "integer" | "long" => format!("e.int(i64::from(*{var}));"),
        "boolean" => format!("e.bool(*{var});"),
        "double" => format!("e.float(*{var});"),
        "float" => format!("e.float(f64::from(*{var}));"),
        "timestamp" => format!("e.timestamp(*{var});"),
        other => panic!("unsupported shape type {other} for {name}"),
    }
}

enum Nested {
    None,
    Struct,
    List,
    Map,
}

/// Whether a member holds structures whose own required members need checking.
fn nested_struct(shapes: &Map<String, Value>, name: &str) -> Nested {
    let shape = &shapes[name];
    let is_struct = |n: &Value| shapes[n.as_str().expect("shape")]["type"] == "structure";
    match shape["type"].as_str() {
        Some("structure") => Nested::Struct,
        Some("list") if is_struct(&shape["member"]["shape"]) => Nested::List,
        Some("map") if is_struct(&shape["value"]["shape"]) => Nested::Map,
        _ => Nested::None,
    }
}

fn members(shape: &Value) -> Map<String, Value> {
    shape["members"].as_object().cloned().unwrap_or_default()
}

fn rust_type(shapes: &Map<String, Value>, name: &str) -> String {
    let shape = &shapes[name];
    match shape["type"].as_str().expect("shape type") {
        "structure" => name.to_string(),
        "list" => format!(
            "Vec<{}>",
            rust_type(
                shapes,
                shape["member"]["shape"].as_str().expect("list member")
            )
        ),
        "map" => format!(
            "BTreeMap<String, {}>",
            rust_type(shapes, shape["value"]["shape"].as_str().expect("map value"))
        ),
        "string" | "blob" => "String".into(),
        "integer" => "i32".into(),
        "long" => "i64".into(),
        "boolean" => "bool".into(),
        "double" => "f64".into(),
        "float" => "f32".into(),
        "timestamp" => "f64".into(),
        other => panic!("unsupported shape type {other} for {name}"),
    }
}

fn field_name(member: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = member.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    match out.as_str() {
        "type" | "ref" | "match" | "mod" | "enum" | "struct" | "use" | "in" | "fn" | "self"
        | "return" => {
            format!("r#{out}")
        }
        _ => out,
    }
}

fn screaming(name: &str) -> String {
    field_name(name)
        .trim_start_matches("r#")
        .to_ascii_uppercase()
}
