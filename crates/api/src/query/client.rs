//! The client's side of the Query protocol, for Berth's own CLI: [`encode_request`] writes an
//! input structure (JSON, members under their model names) as the form body botocore's
//! `QuerySerializer` sends, and [`read_response`] reads an XML answer back into the JSON the
//! server's handlers produced, guided by the same model. [`read_error`] reads an
//! `ErrorResponse`. They are [`params_to_json`](super::params_to_json) and
//! [`write_response`](super::write_response) run backwards, and tested as such.

use super::{join, parse_bool, parse_timestamp, shape_type, Model, MAX_DEPTH, MAX_WRITE_DEPTH};
use serde_json::{Map, Number, Value};

/// The body of a Query call of `operation` (API `version`) with input `input`: `Action`,
/// `Version`, then the input's members as form parameters (lists `Name.member.N`, maps
/// `Name.entry.N.key`/`.value`, an empty list `Name=`), percent-encoded.
pub fn encode_request(
    model: &Value,
    operation: &str,
    version: &str,
    input: &Value,
) -> Result<String, String> {
    let op = model
        .get("operations")
        .and_then(|ops| ops.get(operation))
        .ok_or_else(|| format!("the model has no operation {operation}"))?;
    let writer = Model {
        shapes: &model["shapes"],
        ec2: super::is_ec2(model),
    };
    let mut params = vec![
        ("Action".to_string(), operation.to_string()),
        ("Version".to_string(), version.to_string()),
    ];
    if let Some(input_ref) = op.get("input") {
        if !input.is_null() {
            let shape = writer
                .target(input_ref)
                .ok_or_else(|| format!("the model has no shape {}", input_ref["shape"]))?;
            writer.encode_members(&mut params, shape, input, "", 0)?;
        }
    }
    Ok(params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// The output of `operation`, as JSON, from its XML answer: members under their model names,
/// timestamps as epoch seconds, absent members left out. An answer that is not XML, or whose
/// root is not `OperationResponse`, is an error.
pub fn read_response(model: &Value, operation: &str, xml: &str) -> Result<Value, String> {
    let op = model
        .get("operations")
        .and_then(|ops| ops.get(operation))
        .ok_or_else(|| format!("the model has no operation {operation}"))?;
    let reader = Model {
        shapes: &model["shapes"],
        ec2: super::is_ec2(model),
    };
    let root = Element::parse(xml)?;
    let expected = format!("{operation}Response");
    if root.name != expected {
        return Err(format!(
            "expected <{expected}>, the answer is <{}>",
            root.name
        ));
    }
    let Some(output_ref) = op.get("output") else {
        return Ok(Value::Object(Map::new()));
    };
    let shape = reader
        .target(output_ref)
        .ok_or_else(|| format!("the model has no shape {}", output_ref["shape"]))?;
    let wrapper = output_ref.get("resultWrapper").and_then(Value::as_str);
    let body = match wrapper.filter(|_| !reader.ec2) {
        Some(name) => match root.child(name) {
            Some(result) => result,
            None => return Ok(Value::Object(Map::new())),
        },
        None => &root,
    };
    reader.read_structure(body, shape, "", 0)
}

/// The code and message of a Query error answer (`<ErrorResponse><Error><Code>…`, or EC2's
/// `<Response><Errors><Error>…`); `None` when the text is not one.
pub fn read_error(xml: &str) -> Option<(String, String)> {
    let root = Element::parse(xml).ok()?;
    let error = match root.name.as_str() {
        "ErrorResponse" => root.child("Error")?,
        "Response" => root.child("Errors")?.child("Error")?,
        _ => return None,
    };
    let text = |name: &str| error.child(name).map(|e| e.text.clone());
    Some((text("Code")?, text("Message").unwrap_or_default()))
}

impl Model<'_> {
    fn encode_members(
        &self,
        params: &mut Vec<(String, String)>,
        shape: &Value,
        value: &Value,
        prefix: &str,
        depth: usize,
    ) -> Result<(), String> {
        let Value::Object(object) = value else {
            return Err(format!("{}: expected a structure", at(prefix)));
        };
        let members = shape.get("members").and_then(Value::as_object);
        for (name, member) in object {
            if member.is_null() {
                continue;
            }
            let Some(reference) = members.and_then(|m| m.get(name)) else {
                return Err(format!("{}: the shape has no member {name}", at(prefix)));
            };
            let key = join(prefix, &self.input_member_name(name, reference));
            self.encode_value(params, reference, member, &key, depth + 1)?;
        }
        Ok(())
    }

    fn encode_value(
        &self,
        params: &mut Vec<(String, String)>,
        reference: &Value,
        value: &Value,
        key: &str,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{key}: nested more than {MAX_DEPTH} levels"));
        }
        let shape = self
            .target(reference)
            .ok_or_else(|| format!("{key}: the model has no shape {}", reference["shape"]))?;
        match shape_type(shape) {
            "structure" => self.encode_members(params, shape, value, key, depth),
            "list" => {
                let Value::Array(items) = value else {
                    return Err(format!("{key}: expected a list"));
                };
                if items.is_empty() {
                    params.push((key.to_string(), String::new()));
                    return Ok(());
                }
                let member = shape.get("member").unwrap_or(&Value::Null);
                let items_key = if self.ec2 || self.flag(reference, "flattened") {
                    key.to_string()
                } else {
                    join(key, self.location_name(member).unwrap_or("member"))
                };
                for (i, item) in items.iter().enumerate() {
                    let item_key = join(&items_key, &(i + 1).to_string());
                    self.encode_value(params, member, item, &item_key, depth + 1)?;
                }
                Ok(())
            }
            "map" => {
                let Value::Object(entries) = value else {
                    return Err(format!("{key}: expected a map"));
                };
                let (key_ref, value_ref) = (
                    shape.get("key").unwrap_or(&Value::Null),
                    shape.get("value").unwrap_or(&Value::Null),
                );
                let entries_key = if self.flag(reference, "flattened") {
                    key.to_string()
                } else {
                    join(key, "entry")
                };
                let key_name = self.input_name(key_ref, "key");
                let value_name = self.input_name(value_ref, "value");
                for (i, (k, v)) in entries.iter().enumerate() {
                    let entry = join(&entries_key, &(i + 1).to_string());
                    params.push((join(&entry, &key_name), k.clone()));
                    self.encode_value(params, value_ref, v, &join(&entry, &value_name), depth + 1)?;
                }
                Ok(())
            }
            ty => {
                let text = match (ty, value) {
                    ("string" | "blob", Value::String(s)) => s.clone(),
                    ("boolean", Value::Bool(b)) => b.to_string(),
                    ("integer" | "long" | "double" | "float", Value::Number(n)) => n.to_string(),
                    ("timestamp", Value::Number(n)) => {
                        super::timestamp_text(n.as_f64().unwrap_or(f64::NAN), None)
                            .ok_or_else(|| format!("{key}: the timestamp {n} is out of range"))?
                    }
                    ("timestamp", Value::String(s)) => s.clone(),
                    _ => return Err(format!("{key}: expected a {ty}, found {value}")),
                };
                params.push((key.to_string(), text));
                Ok(())
            }
        }
    }

    fn read_structure(
        &self,
        element: &Element,
        shape: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        let mut out = Map::new();
        let Some(members) = shape.get("members").and_then(Value::as_object) else {
            return Ok(Value::Object(out));
        };
        for (name, reference) in members {
            let tag = self.output_member_name(name, reference);
            let member_path = join(path, name);
            let is_flat_list = self
                .target(reference)
                .is_some_and(|s| shape_type(s) == "list")
                && (self.flag(reference, "flattened"));
            if is_flat_list {
                let items: Vec<&Element> = element.children_named(&tag).collect();
                if items.is_empty() {
                    continue;
                }
                let shape = self.target(reference).unwrap_or(&Value::Null);
                let member = shape.get("member").unwrap_or(&Value::Null);
                let mut list = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let item_path = format!("{member_path}[{i}]");
                    list.push(self.read_value(item, member, &item_path, depth + 1)?);
                }
                out.insert(name.clone(), Value::Array(list));
            } else if let Some(child) = element.child(&tag) {
                out.insert(
                    name.clone(),
                    self.read_value(child, reference, &member_path, depth + 1)?,
                );
            }
        }
        Ok(Value::Object(out))
    }

    fn read_value(
        &self,
        element: &Element,
        reference: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > MAX_WRITE_DEPTH {
            return Err(format!("{path}: nested more than {MAX_WRITE_DEPTH} levels"));
        }
        let shape = self
            .target(reference)
            .ok_or_else(|| format!("{path}: the model has no shape {}", reference["shape"]))?;
        match shape_type(shape) {
            "structure" => self.read_structure(element, shape, path, depth),
            "list" => {
                let member = shape.get("member").unwrap_or(&Value::Null);
                let default = if self.ec2 { "item" } else { "member" };
                let item_tag = self.location_name(member).unwrap_or(default);
                let mut list = Vec::new();
                for (i, item) in element.children_named(item_tag).enumerate() {
                    let item_path = format!("{path}[{i}]");
                    list.push(self.read_value(item, member, &item_path, depth + 1)?);
                }
                Ok(Value::Array(list))
            }
            "map" => {
                let (key_ref, value_ref) = (
                    shape.get("key").unwrap_or(&Value::Null),
                    shape.get("value").unwrap_or(&Value::Null),
                );
                let key_tag = self.location_name(key_ref).unwrap_or("key");
                let value_tag = self.location_name(value_ref).unwrap_or("value");
                let mut map = Map::new();
                for entry in element.children_named("entry") {
                    let key = entry.child(key_tag).map(|k| k.text.clone());
                    let value = entry.child(value_tag);
                    let (Some(key), Some(value)) = (key, value) else {
                        return Err(format!("{path}: a map entry without a key or value"));
                    };
                    let entry_path = join(path, &key);
                    let value = self.read_value(value, value_ref, &entry_path, depth + 1)?;
                    map.insert(key, value);
                }
                Ok(Value::Object(map))
            }
            ty => {
                let text = element.text.as_str();
                let value = match ty {
                    "string" | "blob" => Some(Value::String(text.to_string())),
                    "integer" | "long" => text.parse::<i64>().ok().map(Value::from),
                    "boolean" => parse_bool(text).map(Value::Bool),
                    "double" | "float" => text
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number),
                    "timestamp" => parse_timestamp(text)
                        .and_then(Number::from_f64)
                        .map(Value::Number),
                    _ => None,
                };
                value.ok_or_else(|| format!("{path}: '{text}' is not a valid {ty}"))
            }
        }
    }
}

/// One XML element: its name (without a namespace prefix), its child elements and its text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

impl Element {
    /// The document's root element.
    fn parse(xml: &str) -> Result<Element, String> {
        use xmlparser::{ElementEnd, Token, Tokenizer};
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        for token in Tokenizer::from(xml) {
            let token = token.map_err(|e| format!("the answer is not XML: {e}"))?;
            match token {
                Token::ElementStart { local, .. } => {
                    if root.is_some() {
                        return Err("the answer has content after its root element".into());
                    }
                    if stack.len() > MAX_WRITE_DEPTH {
                        return Err("the answer is nested too deeply".into());
                    }
                    stack.push(Element {
                        name: local.as_str().to_string(),
                        ..Element::default()
                    });
                }
                Token::ElementEnd { end, .. } => {
                    if matches!(end, ElementEnd::Open) {
                        continue;
                    }
                    let element = stack.pop().ok_or_else(|| {
                        "the answer closes an element it never opened".to_string()
                    })?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Token::Text { text } => {
                    if let Some(open) = stack.last_mut() {
                        open.text.push_str(&unescape(text.as_str())?);
                    }
                }
                Token::Cdata { text, .. } => {
                    if let Some(open) = stack.last_mut() {
                        open.text.push_str(text.as_str());
                    }
                }
                _ => {}
            }
        }
        root.ok_or_else(|| "the answer has no XML element".into())
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children_named<'e>(&'e self, name: &'e str) -> impl Iterator<Item = &'e Element> + 'e {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// XML text with its entity and character references replaced.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find(';')
            .ok_or_else(|| format!("an unterminated reference in '{text}'"))?;
        let name = &rest[start + 1..start + end];
        let c = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        out.push(c.ok_or_else(|| format!("an unknown reference &{name}; in the answer"))?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Form encoding as the SDKs do it: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn at(prefix: &str) -> &str {
    if prefix.is_empty() {
        "the input"
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_form, params_to_json, write_error, write_response};
    use super::*;
    use serde_json::json;

    fn elbv2() -> &'static Value {
        crate::elbv2::model()
    }

    /// The server's parser reads back exactly what the client wrote.
    fn round_trip_request(operation: &str, input: Value) {
        let body = encode_request(elbv2(), operation, "2015-12-01", &input).unwrap();
        let mut params = decode_form(body.as_bytes()).unwrap();
        assert_eq!(params.remove(0), ("Action".into(), operation.into()));
        assert_eq!(params.remove(0), ("Version".into(), "2015-12-01".into()));
        let shape = elbv2()["operations"][operation]["input"]["shape"]
            .as_str()
            .unwrap();
        let parsed = params_to_json(elbv2(), shape, &params, false).unwrap();
        assert_eq!(
            parsed, input,
            "{operation}: the server read {body} back differently"
        );
    }

    /// The client reads back exactly what the server wrote.
    fn round_trip_response(operation: &str, output: Value) {
        let xml = write_response(elbv2(), operation, &output, "req-1").unwrap();
        let read = read_response(elbv2(), operation, &xml).unwrap();
        assert_eq!(
            read, output,
            "{operation}: the client read {xml} differently"
        );
    }

    #[test]
    fn requests_round_trip_through_the_servers_parser() {
        round_trip_request(
            "CreateTargetGroup",
            json!({"Name": "web & api", "Protocol": "HTTP", "Port": 80, "VpcId": "vpc-1",
                   "HealthCheckPath": "/health?x=1", "Matcher": {"HttpCode": "200-299"},
                   "Tags": [{"Key": "a", "Value": "b c"}, {"Key": "é", "Value": ""}]}),
        );
        round_trip_request(
            "DescribeLoadBalancers",
            json!({"Names": ["a", "b"], "PageSize": 10}),
        );
        round_trip_request("DescribeTargetGroups", json!({"Names": []}));
        round_trip_request(
            "ModifyTargetGroupAttributes",
            json!({"TargetGroupArn": "arn:x", "Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "5"}]}),
        );
    }

    #[test]
    fn responses_round_trip_through_the_servers_writer() {
        round_trip_response(
            "DescribeLoadBalancers",
            json!({"LoadBalancers": [{"LoadBalancerName": "web", "DNSName": "web.local",
                "CreatedTime": 1_700_000_000.5, "State": {"Code": "active"},
                "AvailabilityZones": [{"ZoneName": "us-east-1a", "SubnetId": "subnet-1"}],
                "SecurityGroups": []}], "NextMarker": "m<&>"}),
        );
        round_trip_response(
            "DescribeTargetHealth",
            json!({"TargetHealthDescriptions": [{"Target": {"Id": "10.0.0.1", "Port": 8080},
                "TargetHealth": {"State": "unhealthy", "Reason": "Target.FailedHealthChecks",
                "Description": "Health checks failed\nwith \"503\""}}]}),
        );
        round_trip_response("DeleteLoadBalancer", json!({}));
    }

    #[test]
    fn errors_are_read_with_their_code_and_message() {
        let xml = write_error(
            elbv2(),
            "LoadBalancerNotFound",
            "One or more load balancers not found",
            true,
            "r",
        );
        assert_eq!(
            read_error(&xml),
            Some((
                "LoadBalancerNotFound".into(),
                "One or more load balancers not found".into()
            ))
        );
        assert_eq!(read_error("not xml"), None);
    }

    #[test]
    fn bad_answers_and_inputs_are_errors() {
        assert!(read_response(elbv2(), "DescribeLoadBalancers", "<Other/>")
            .unwrap_err()
            .contains("expected <DescribeLoadBalancersResponse>"));
        assert!(read_response(elbv2(), "DescribeLoadBalancers", "<a><b></a>").is_err());
        assert!(
            encode_request(elbv2(), "DescribeLoadBalancers", "v", &json!({"Nope": 1}))
                .unwrap_err()
                .contains("no member Nope")
        );
        assert!(encode_request(
            elbv2(),
            "DescribeLoadBalancers",
            "v",
            &json!({"PageSize": "x"})
        )
        .unwrap_err()
        .contains("PageSize"));
    }
}
