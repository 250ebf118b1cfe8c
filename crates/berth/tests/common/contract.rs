//! Checks answers against botocore's ECS model: every member name exists in the operation's
//! output shape, every value has the modelled type, every enum value is one the model lists,
//! and every error's `__type` is one botocore can map for the operation.

use super::Answer;
use serde_json::Value;
use std::sync::OnceLock;

fn model() -> &'static Value {
    static MODEL: OnceLock<Value> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../api/models/ecs-2014-11-13.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("vendored model"))
            .expect("model JSON")
    })
}

/// Errors any AWS JSON service may answer with, beyond the operation's modelled ones.
const COMMON_ERRORS: &[&str] = &[
    "SerializationException",
    "UnknownOperationException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "RequestEntityTooLargeException",
    "RequestTimeoutException",
];

pub fn check_answer(op: &str, a: &Answer) {
    assert!(
        a.request_id.as_deref().is_some_and(|r| !r.is_empty()),
        "{op}: answer has no x-amzn-RequestId"
    );
    let m = model();
    let operation = &m["operations"][op];
    if a.status == 200 {
        let shape = operation["output"]["shape"]
            .as_str()
            .unwrap_or_else(|| panic!("{op} has no output shape"));
        if let Err(e) = check(&a.body, shape, "") {
            panic!("{op}: answer breaks the {shape} contract: {e}\n{}", a.body);
        }
        return;
    }
    let kind = a
        .error_type()
        .unwrap_or_else(|| panic!("{op}: error answer without __type: {}", a.body));
    assert!(
        a.body["message"].is_string(),
        "{op}: error without message: {}",
        a.body
    );
    let modelled = operation["errors"]
        .as_array()
        .map(|e| e.iter().any(|x| x["shape"] == kind.as_str()))
        .unwrap_or(false);
    assert!(
        modelled || COMMON_ERRORS.contains(&kind.as_str()),
        "{op}: {kind} is not an error the model lists for it"
    );
    let expected = if kind == "ServerException" {
        500
    } else if kind.contains("Signature")
        || kind.contains("Authentication")
        || kind == "UnrecognizedClientException"
    {
        403
    } else {
        a.status
    };
    assert_eq!(
        a.status, expected,
        "{op}: {kind} came with HTTP {}",
        a.status
    );
    assert!(
        a.status < 500 || kind == "ServerException",
        "{op}: 5xx only for ServerException"
    );
}

/// Checks `v` against shape `name`; the error names the member path.
pub fn check(v: &Value, name: &str, path: &str) -> Result<(), String> {
    let shape = &model()["shapes"][name];
    let ty = shape["type"]
        .as_str()
        .ok_or_else(|| format!("{path}: unknown shape {name}"))?;
    let bad = |what: &str| Err(format!("{path}: expected {what} for {name}, got {v}"));
    match ty {
        "structure" => {
            let Some(obj) = v.as_object() else {
                return bad("an object");
            };
            for (k, val) in obj {
                let member = &shape["members"][k];
                let Some(target) = member["shape"].as_str() else {
                    return Err(format!("{path}: member '{k}' is not in {name}"));
                };
                check(val, target, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        "list" => {
            let Some(items) = v.as_array() else {
                return bad("an array");
            };
            let member = shape["member"]["shape"].as_str().unwrap_or_default();
            items
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| check(x, member, &format!("{path}[{i}]")))
        }
        "map" => {
            let Some(obj) = v.as_object() else {
                return bad("an object");
            };
            let value = shape["value"]["shape"].as_str().unwrap_or_default();
            obj.iter()
                .try_for_each(|(k, x)| check(x, value, &format!("{path}.{k}")))
        }
        "string" => {
            let Some(s) = v.as_str() else {
                return bad("a string");
            };
            if let Some(values) = shape["enum"].as_array() {
                if !values.iter().any(|e| e == s) {
                    return Err(format!("{path}: '{s}' is not a value of enum {name}"));
                }
            }
            Ok(())
        }
        "integer" | "long" => {
            if v.is_i64() || v.is_u64() {
                Ok(())
            } else {
                bad("an integer")
            }
        }
        "boolean" => {
            if v.is_boolean() {
                Ok(())
            } else {
                bad("a boolean")
            }
        }
        "double" | "float" | "timestamp" => {
            if v.is_number() {
                Ok(())
            } else {
                bad("a number")
            }
        }
        other => Err(format!("{path}: unsupported shape type {other}")),
    }
}

#[test]
fn the_contract_check_catches_violations() {
    assert!(check(
        &serde_json::json!({"clusterArns": ["a"]}),
        "ListClustersResponse",
        ""
    )
    .is_ok());
    assert!(
        check(
            &serde_json::json!({"clusterArn": ["a"]}),
            "ListClustersResponse",
            ""
        )
        .is_err(),
        "unknown member"
    );
    assert!(
        check(
            &serde_json::json!({"clusterArns": "a"}),
            "ListClustersResponse",
            ""
        )
        .is_err(),
        "wrong type"
    );
    assert!(
        check(
            &serde_json::json!({"taskDefinition": {"status": "GONE"}}),
            "DescribeTaskDefinitionResponse",
            ""
        )
        .is_err(),
        "bad enum"
    );
}
