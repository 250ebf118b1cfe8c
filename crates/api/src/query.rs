//! The AWS Query protocol (Elastic Load Balancing v2) and its EC2 variant: form-encoded requests,
//! XML responses.
//!
//! As [`crate::cbor`] does for CBOR, a request becomes the `serde_json::Value` the generated shapes
//! deserialize from: [`decode_form`] splits the body into name/value pairs and [`params_to_json`]
//! rebuilds the input structure from them, guided by the botocore model (the rules of botocore's
//! `QuerySerializer` and `EC2Serializer`, read backwards). [`write_response`] and [`write_error`]
//! write the XML answers botocore and the AWS SDKs parse; [`error_code`] reads an exception
//! shape's code, HTTP status and fault from the model.
//!
//! Query rules: a structure member is `Prefix.Member` (its `locationName` if it has one); a list
//! is `Prefix.member.N` (1-based; the list member's `locationName` replaces `member`; a flattened
//! list is `Prefix.N`), an empty list `Prefix=`; a map is `Prefix.entry.N.key` and
//! `Prefix.entry.N.value` (a flattened map drops `entry`). The EC2 variant names a member by its
//! `queryName`, else its `locationName` capitalized, and flattens every list.

pub mod client;

use crate::ParseError;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The deepest nesting of structures, lists and maps [`params_to_json`] follows.
pub const MAX_DEPTH: usize = 20;
/// The largest list or map entry index [`params_to_json`] accepts.
pub const MAX_INDEX: usize = 10_000;
/// The content type of Query protocol requests.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// The content type of Query protocol responses, as AWS sends it.
pub const XML_CONTENT_TYPE: &str = "text/xml";

/// The most dot-separated segments one parameter name may have: a list level takes two.
const MAX_SEGMENTS: usize = 2 * MAX_DEPTH + 2;
/// The deepest nesting [`write_response`] writes (a JSON value cannot be deeper than 128).
const MAX_WRITE_DEPTH: usize = 128;
/// The most characters of a parameter's name or value quoted in an error message.
const QUOTED_CHARS: usize = 100;
const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// Decodes an `application/x-www-form-urlencoded` body into its name/value pairs, in order:
/// `+` is a space, `%XX` a byte (a `%` not followed by two hex digits stays as it is), a pair
/// without `=` has an empty value and empty pairs (`&&`) are skipped. Names or values that are
/// not UTF-8 once decoded are a [`ParseError::Serialization`].
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let mut pairs = Vec::new();
    for piece in body.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let (name, rest) = piece.split_at(eq);
                (name, rest.get(1..).unwrap_or_default())
            }
            None => (piece, &piece[piece.len()..]),
        };
        pairs.push((percent_decode(name)?, percent_decode(value)?));
    }
    Ok(pairs)
}

fn percent_decode(bytes: &[u8]) -> Result<String, ParseError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(hex_digit),
                bytes.get(i + 2).and_then(hex_digit),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        ParseError::Serialization("a form parameter is not valid UTF-8 once decoded".to_string())
    })
}

fn hex_digit(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a model speaks the EC2 variant of the Query protocol (`metadata.protocol` is `ec2`):
/// the `ec2` argument of [`params_to_json`].
pub fn is_ec2(model: &Value) -> bool {
    model
        .get("metadata")
        .and_then(|m| m.get("protocol"))
        .and_then(Value::as_str)
        == Some("ec2")
}

/// Builds the JSON object of input structure `shape` (a shape name of `model`, botocore's
/// `service-2.json`) from a request's parameters, `Action` and `Version` already removed. `ec2`
/// selects the EC2 variant's naming and flattened lists.
///
/// Members come out under their model names, typed by their shapes: integers and longs as JSON
/// integers, booleans as booleans, doubles and floats as numbers, timestamps (ISO 8601 or epoch
/// seconds on the wire) as epoch seconds, strings and blobs (base64) as strings, lists in index
/// order. A parameter the shape does not define, a malformed index, a value that does not parse as
/// its type or nesting deeper than [`MAX_DEPTH`] is a [`ParseError::Serialization`] naming the
/// parameter; required members are not checked here.
pub fn params_to_json(
    model: &Value,
    shape: &str,
    params: &[(String, String)],
    ec2: bool,
) -> Result<Value, ParseError> {
    let mut root = Node::default();
    for (name, value) in params {
        root.insert(name, value)?;
    }
    let model = Model {
        shapes: &model["shapes"],
        ec2,
    };
    let Some(target) = model.shapes.get(shape) else {
        return Err(serialization(format!("the model has no shape {shape}")));
    };
    if shape_type(target) != "structure" {
        return Err(serialization(format!(
            "the shape {shape} is not a structure"
        )));
    }
    model.parse_structure(&root, target, "", 0)
}

/// Writes the XML answer to `operation` whose output, as JSON (members under their model names,
/// timestamps as epoch seconds, blobs as base64), is `output`; `null` is an empty output.
///
/// Query: `<OpResponse xmlns=NS><OpResult>members</OpResult><ResponseMetadata><RequestId>ID
/// </RequestId></ResponseMetadata></OpResponse>`, the result element named by the operation's
/// `resultWrapper` (absent when the operation has no output shape). EC2 (`metadata.protocol` is
/// `ec2`): `<OpResponse xmlns=NS><requestId>ID</requestId>members</OpResponse>`, lists' items
/// `<item>` unless the model names them. Members are written in the model's order, under their
/// `locationName` if they have one; absent and null members are left out. A JSON value of the
/// wrong type for its shape, or an operation the model does not have, is an error.
pub fn write_response(
    model: &Value,
    operation: &str,
    output: &Value,
    request_id: &str,
) -> Result<String, String> {
    let op = model
        .get("operations")
        .and_then(|ops| ops.get(operation))
        .ok_or_else(|| format!("the model has no operation {operation}"))?;
    let writer = Model {
        shapes: &model["shapes"],
        ec2: is_ec2(model),
    };
    let response = format!("{operation}Response");
    let mut out = String::from(XML_DECLARATION);
    open_with_namespace(&mut out, &response, namespace(model).as_deref());
    if writer.ec2 {
        text_element(&mut out, "requestId", request_id);
    }
    if let Some(output_ref) = op.get("output") {
        let shape = writer
            .target(output_ref)
            .ok_or_else(|| format!("the model has no shape {}", output_ref["shape"]))?;
        let wrapper = if writer.ec2 {
            None
        } else {
            output_ref.get("resultWrapper").and_then(Value::as_str)
        };
        if let Some(wrapper) = wrapper {
            open(&mut out, wrapper);
        }
        if !output.is_null() {
            writer.write_members(&mut out, shape, output, "", 0)?;
        }
        if let Some(wrapper) = wrapper {
            close(&mut out, wrapper);
        }
    }
    if !writer.ec2 {
        out.push_str("<ResponseMetadata>");
        text_element(&mut out, "RequestId", request_id);
        out.push_str("</ResponseMetadata>");
    }
    close(&mut out, &response);
    Ok(out)
}

/// Writes an error answer; EC2's form when the model's `metadata.protocol` is `ec2`.
///
/// Query: `<ErrorResponse xmlns=NS><Error><Type>Sender|Receiver</Type><Code>…</Code><Message>…
/// </Message></Error><RequestId>…</RequestId></ErrorResponse>`. EC2: `<Response><Errors><Error>
/// <Code>…</Code><Message>…</Message></Error></Errors><RequestID>…</RequestID></Response>`.
pub fn write_error(
    model: &Value,
    code: &str,
    message: &str,
    sender_fault: bool,
    request_id: &str,
) -> String {
    let mut out = String::from(XML_DECLARATION);
    if is_ec2(model) {
        out.push_str("<Response><Errors><Error>");
        text_element(&mut out, "Code", code);
        text_element(&mut out, "Message", message);
        out.push_str("</Error></Errors>");
        text_element(&mut out, "RequestID", request_id);
        out.push_str("</Response>");
    } else {
        open_with_namespace(&mut out, "ErrorResponse", namespace(model).as_deref());
        out.push_str("<Error>");
        let fault = if sender_fault { "Sender" } else { "Receiver" };
        text_element(&mut out, "Type", fault);
        text_element(&mut out, "Code", code);
        text_element(&mut out, "Message", message);
        out.push_str("</Error>");
        text_element(&mut out, "RequestId", request_id);
        out.push_str("</ErrorResponse>");
    }
    out
}

/// The wire code, HTTP status and sender fault of exception shape `exception_shape`, from its
/// `error` member (`TargetGroupNotFoundException` is `("TargetGroupNotFound", 400, true)`). Without
/// one, an exception shape's code is its name, and its status and fault follow its `fault` flag
/// (500 and the receiver's fault, else 400 and the sender's). `None` for a shape that is not an
/// exception or not in the model.
pub fn error_code(model: &Value, exception_shape: &str) -> Option<(String, u16, bool)> {
    let shape = model.get("shapes")?.get(exception_shape)?;
    let error = shape.get("error");
    if error.is_none() && shape.get("exception").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let fault = shape.get("fault").and_then(Value::as_bool).unwrap_or(false);
    let field = |name: &str| error.and_then(|e| e.get(name));
    let code = field("code")
        .and_then(Value::as_str)
        .unwrap_or(exception_shape)
        .to_string();
    let status = field("httpStatusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(if fault { 500 } else { 400 });
    let sender = field("senderFault")
        .and_then(Value::as_bool)
        .unwrap_or(!fault);
    Some((code, status, sender))
}

/// The parameters as a tree of their dot-separated name segments.
#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, name: &str, value: &str) -> Result<(), ParseError> {
        let mut node = self;
        for (i, segment) in name.split('.').enumerate() {
            if i >= MAX_SEGMENTS {
                return Err(serialization(format!(
                    "the parameter {} is nested too deeply",
                    shorten(name)
                )));
            }
            if segment.is_empty() {
                return Err(not_recognized(name));
            }
            node = node.children.entry(segment.to_string()).or_default();
        }
        if node.value.is_some() {
            return Err(serialization(format!(
                "the parameter {} appears more than once",
                shorten(name)
            )));
        }
        node.value = Some(value.to_string());
        Ok(())
    }
}

/// The shapes of a model, and which variant of the protocol is spoken.
#[derive(Debug, Clone, Copy)]
struct Model<'a> {
    shapes: &'a Value,
    ec2: bool,
}

impl<'a> Model<'a> {
    /// The shape a reference (`{"shape": NAME, ...}`) points at.
    fn target(&self, reference: &Value) -> Option<&'a Value> {
        let name = reference.get("shape")?.as_str()?;
        self.shapes.get(name)
    }

    /// A serialization trait of a reference: its own, else its target shape's (as botocore
    /// merges them).
    fn prop<'b>(&self, reference: &'b Value, key: &str) -> Option<&'b Value>
    where
        'a: 'b,
    {
        reference
            .get(key)
            .or_else(|| self.target(reference)?.get(key))
    }

    fn flag(&self, reference: &Value, key: &str) -> bool {
        self.prop(reference, key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn location_name<'b>(&self, reference: &'b Value) -> Option<&'b str>
    where
        'a: 'b,
    {
        self.prop(reference, "locationName").and_then(Value::as_str)
    }

    /// For a member that is a flattened list whose member has a `locationName`: that name, which
    /// replaces the member's own (botocore's `_serialize_type_list` and `_member_key_name`).
    fn flattened_list_name(&self, reference: &Value) -> Option<&'a str> {
        let shape = self.target(reference)?;
        if shape_type(shape) != "list" || !self.flag(reference, "flattened") {
            return None;
        }
        self.location_name(shape.get("member")?)
            .filter(|name| !name.is_empty())
    }

    /// EC2's request name of a reference: its `queryName`, else its `locationName` capitalized.
    fn ec2_name(&self, reference: &Value) -> Option<String> {
        if let Some(name) = self.prop(reference, "queryName").and_then(Value::as_str) {
            return Some(name.to_string());
        }
        self.location_name(reference).map(capitalize)
    }

    /// The name a structure member goes by in a request's parameters.
    fn input_member_name(&self, member: &str, reference: &Value) -> String {
        if self.ec2 {
            return self
                .ec2_name(reference)
                .unwrap_or_else(|| member.to_string());
        }
        if let Some(name) = self.flattened_list_name(reference) {
            return name.to_string();
        }
        self.location_name(reference).unwrap_or(member).to_string()
    }

    /// The name of a map's key or value in a request's parameters.
    fn input_name(&self, reference: &Value, default: &str) -> String {
        if self.ec2 {
            self.ec2_name(reference)
                .unwrap_or_else(|| default.to_string())
        } else {
            self.location_name(reference).unwrap_or(default).to_string()
        }
    }

    /// The element name of a structure member in a response.
    fn output_member_name(&self, member: &str, reference: &Value) -> String {
        if let Some(name) = self.flattened_list_name(reference) {
            return name.to_string();
        }
        self.location_name(reference).unwrap_or(member).to_string()
    }

    fn parse(
        &self,
        node: &Node,
        reference: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(serialization(format!(
                "the parameter {path} is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let Some(shape) = self.target(reference) else {
            return Err(serialization(format!(
                "the model has no shape {} for parameter {path}",
                reference["shape"]
            )));
        };
        match shape_type(shape) {
            "structure" => self.parse_structure(node, shape, path, depth),
            "list" => self.parse_list(node, reference, shape, path, depth),
            "map" => self.parse_map(node, reference, shape, path, depth),
            ty => parse_scalar(node, ty, path),
        }
    }

    fn parse_structure(
        &self,
        node: &Node,
        shape: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, ParseError> {
        if let Some(value) = node.value.as_deref().filter(|v| !v.is_empty()) {
            return Err(invalid(value, path, "structure"));
        }
        let empty = Map::new();
        let members = shape
            .get("members")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut out = Map::new();
        for (segment, child) in &node.children {
            let child_path = join(path, segment);
            let Some((name, reference)) = members
                .iter()
                .find(|(name, reference)| self.input_member_name(name, reference) == *segment)
            else {
                return Err(not_recognized(&child_path));
            };
            out.insert(
                name.clone(),
                self.parse(child, reference, &child_path, depth + 1)?,
            );
        }
        Ok(Value::Object(out))
    }

    fn parse_list(
        &self,
        node: &Node,
        reference: &Value,
        shape: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, ParseError> {
        if let Some(value) = node.value.as_deref().filter(|v| !v.is_empty()) {
            return Err(invalid(value, path, "list"));
        }
        let Some(member) = shape.get("member") else {
            return Err(serialization(format!(
                "the model's list shape for parameter {path} has no member"
            )));
        };
        let (items, items_path) = if self.ec2 || self.flag(reference, "flattened") {
            (&node.children, path.to_string())
        } else {
            let name = self.location_name(member).unwrap_or("member");
            match wrapped(node, name, path)? {
                Some(items) => (items, join(path, name)),
                None => return Ok(Value::Array(Vec::new())),
            }
        };
        let mut out = Vec::new();
        for (item_path, child) in indexed(items, &items_path)? {
            out.push(self.parse(child, member, &item_path, depth + 1)?);
        }
        Ok(Value::Array(out))
    }

    fn parse_map(
        &self,
        node: &Node,
        reference: &Value,
        shape: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Value, ParseError> {
        if let Some(value) = node.value.as_deref().filter(|v| !v.is_empty()) {
            return Err(invalid(value, path, "map"));
        }
        let (Some(key_ref), Some(value_ref)) = (shape.get("key"), shape.get("value")) else {
            return Err(serialization(format!(
                "the model's map shape for parameter {path} has no key or value"
            )));
        };
        let (entries, entries_path) = if self.flag(reference, "flattened") {
            (&node.children, path.to_string())
        } else {
            match wrapped(node, "entry", path)? {
                Some(entries) => (entries, join(path, "entry")),
                None => return Ok(Value::Object(Map::new())),
            }
        };
        let key_name = self.input_name(key_ref, "key");
        let value_name = self.input_name(value_ref, "value");
        let mut out = Map::new();
        for (entry_path, entry) in indexed(entries, &entries_path)? {
            if entry.value.is_some() {
                return Err(not_recognized(&entry_path));
            }
            let (mut key_node, mut value_node) = (None, None);
            for (segment, child) in &entry.children {
                if *segment == key_name {
                    key_node = Some(child);
                } else if *segment == value_name {
                    value_node = Some(child);
                } else {
                    return Err(not_recognized(&join(&entry_path, segment)));
                }
            }
            let key_path = join(&entry_path, &key_name);
            let value_path = join(&entry_path, &value_name);
            let Some(key_node) = key_node else {
                return Err(ParseError::Missing(key_path));
            };
            let Some(value_node) = value_node else {
                return Err(ParseError::Missing(value_path));
            };
            let Value::String(key) = self.parse(key_node, key_ref, &key_path, depth + 1)? else {
                return Err(serialization(format!(
                    "the parameter {key_path} is not a string"
                )));
            };
            out.insert(
                key,
                self.parse(value_node, value_ref, &value_path, depth + 1)?,
            );
        }
        Ok(Value::Object(out))
    }

    fn write_members(
        &self,
        out: &mut String,
        shape: &Value,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let Value::Object(object) = value else {
            return Err(wrong_type(path, "structure", value));
        };
        let Some(members) = shape.get("members").and_then(Value::as_object) else {
            return Ok(());
        };
        for (name, reference) in members {
            let Some(member) = object.get(name).filter(|v| !v.is_null()) else {
                continue;
            };
            let tag = self.output_member_name(name, reference);
            self.write_value(out, &tag, reference, member, &join(path, name), depth + 1)?;
        }
        Ok(())
    }

    fn write_value(
        &self,
        out: &mut String,
        tag: &str,
        reference: &Value,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_WRITE_DEPTH {
            return Err(format!("{path}: nested more than {MAX_WRITE_DEPTH} levels"));
        }
        let Some(shape) = self.target(reference) else {
            return Err(format!(
                "{path}: the model has no shape {}",
                reference["shape"]
            ));
        };
        match shape_type(shape) {
            "structure" => {
                open(out, tag);
                self.write_members(out, shape, value, path, depth)?;
                close(out, tag);
            }
            "list" => {
                let Value::Array(items) = value else {
                    return Err(wrong_type(path, "list", value));
                };
                let Some(member) = shape.get("member") else {
                    return Err(format!("{path}: the model's list shape has no member"));
                };
                let flattened = self.flag(reference, "flattened");
                let item_tag = if flattened {
                    tag
                } else {
                    let default = if self.ec2 { "item" } else { "member" };
                    self.location_name(member).unwrap_or(default)
                };
                if !flattened {
                    open(out, tag);
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.write_value(out, item_tag, member, item, &item_path, depth + 1)?;
                }
                if !flattened {
                    close(out, tag);
                }
            }
            "map" => {
                let Value::Object(entries) = value else {
                    return Err(wrong_type(path, "map", value));
                };
                let (Some(key_ref), Some(value_ref)) = (shape.get("key"), shape.get("value"))
                else {
                    return Err(format!("{path}: the model's map shape has no key or value"));
                };
                let key_tag = self.location_name(key_ref).unwrap_or("key");
                let value_tag = self.location_name(value_ref).unwrap_or("value");
                let flattened = self.flag(reference, "flattened");
                let entry_tag = if flattened { tag } else { "entry" };
                if !flattened {
                    open(out, tag);
                }
                for (key, entry) in entries {
                    let entry_path = join(path, key);
                    open(out, entry_tag);
                    let key_value = Value::String(key.clone());
                    self.write_value(out, key_tag, key_ref, &key_value, &entry_path, depth + 1)?;
                    self.write_value(out, value_tag, value_ref, entry, &entry_path, depth + 1)?;
                    close(out, entry_tag);
                }
                if !flattened {
                    close(out, tag);
                }
            }
            ty => {
                let text = self.scalar_text(ty, reference, value, path)?;
                text_element(out, tag, &text);
            }
        }
        Ok(())
    }

    fn scalar_text(
        &self,
        ty: &str,
        reference: &Value,
        value: &Value,
        path: &str,
    ) -> Result<String, String> {
        let text = match (ty, value) {
            ("string" | "blob", Value::String(s)) => Some(s.clone()),
            ("boolean", Value::Bool(b)) => Some(b.to_string()),
            ("integer" | "long", Value::Number(n)) => integer_text(n),
            ("double" | "float", Value::Number(n)) => Some(n.to_string()),
            ("timestamp", Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(f64::NAN);
                let format = self
                    .prop(reference, "timestampFormat")
                    .and_then(Value::as_str);
                let text = timestamp_text(secs, format);
                if text.is_none() {
                    return Err(format!("{path}: the timestamp {n} is out of range"));
                }
                text
            }
            _ => None,
        };
        text.ok_or_else(|| wrong_type(path, ty, value))
    }
}

/// The children of the only child of `node`, which must be named `name` (a list's `member`, a
/// map's `entry`); `None` when `node` has no children.
fn wrapped<'n>(
    node: &'n Node,
    name: &str,
    path: &str,
) -> Result<Option<&'n BTreeMap<String, Node>>, ParseError> {
    let mut found = None;
    for (segment, child) in &node.children {
        if segment.as_str() == name && child.value.is_none() {
            found = Some(&child.children);
        } else {
            return Err(not_recognized(&join(path, segment)));
        }
    }
    Ok(found)
}

/// The items of a list or the entries of a map, in index order, each with its parameter name.
fn indexed<'n>(
    items: &'n BTreeMap<String, Node>,
    path: &str,
) -> Result<Vec<(String, &'n Node)>, ParseError> {
    let mut out = Vec::with_capacity(items.len());
    for (segment, child) in items {
        let item_path = join(path, segment);
        let Some(index) = parse_index(segment) else {
            return Err(not_recognized(&item_path));
        };
        if index > MAX_INDEX {
            return Err(serialization(format!(
                "the parameter {item_path} has an index greater than {MAX_INDEX}"
            )));
        }
        out.push((index, item_path, child));
    }
    out.sort_by_key(|(index, _, _)| *index);
    Ok(out
        .into_iter()
        .map(|(_, item_path, child)| (item_path, child))
        .collect())
}

/// A positive decimal index without leading zeros.
fn parse_index(segment: &str) -> Option<usize> {
    if segment.is_empty()
        || segment.len() > 9
        || segment.starts_with('0')
        || !segment.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    segment.parse().ok()
}

fn parse_scalar(node: &Node, ty: &str, path: &str) -> Result<Value, ParseError> {
    if let Some(segment) = node.children.keys().next() {
        return Err(not_recognized(&join(path, segment)));
    }
    let Some(text) = node.value.as_deref() else {
        return Err(ParseError::Missing(path.to_string()));
    };
    let parsed = match ty {
        "string" | "blob" => Some(Value::String(text.to_string())),
        "integer" => text.parse::<i32>().ok().map(Value::from),
        "long" => text.parse::<i64>().ok().map(Value::from),
        "boolean" => parse_bool(text).map(Value::Bool),
        "double" => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        "float" => text
            .parse::<f32>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| Number::from_f64(f64::from(f)))
            .map(Value::Number),
        "timestamp" => parse_timestamp(text)
            .and_then(Number::from_f64)
            .map(Value::Number),
        other => {
            return Err(serialization(format!(
                "the parameter {path} has a shape of unsupported type '{other}'"
            )))
        }
    };
    parsed.ok_or_else(|| invalid(text, path, ty))
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Epoch seconds, from epoch seconds or an ISO 8601 date and time (UTC when it has no offset).
fn parse_timestamp(text: &str) -> Option<f64> {
    if let Ok(secs) = text.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(|t| t.assume_utc()))
        .ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// Epoch seconds as `timestampFormat` says: `unixTimestamp` as a number, `rfc822` as an HTTP
/// date, else ISO 8601 in UTC with milliseconds. `None` when out of range.
fn timestamp_text(secs: f64, format: Option<&str>) -> Option<String> {
    if !secs.is_finite() {
        return None;
    }
    if format == Some("unixTimestamp") {
        return Some(if secs.fract() == 0.0 && secs.abs() < 1e15 {
            format!("{}", secs as i64)
        } else {
            secs.to_string()
        });
    }
    let millis = (secs * 1000.0).round();
    if millis.abs() > 1e15 {
        return None;
    }
    let t = OffsetDateTime::from_unix_timestamp_nanos((millis as i128) * 1_000_000).ok()?;
    if format == Some("rfc822") {
        t.format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .ok()
    } else {
        t.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .ok()
    }
}

fn integer_text(n: &Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.to_string());
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then(|| format!("{}", f as i64))
}

/// The XML namespace of a model's responses: `metadata.xmlNamespace`, else for EC2 the one its
/// API version implies.
fn namespace(model: &Value) -> Option<String> {
    let metadata = model.get("metadata")?;
    if let Some(ns) = metadata
        .get("xmlNamespace")
        .and_then(|ns| ns.as_str().or_else(|| ns.get("uri")?.as_str()))
    {
        return Some(ns.to_string());
    }
    if is_ec2(model) {
        let version = metadata.get("apiVersion")?.as_str()?;
        return Some(format!("http://ec2.amazonaws.com/doc/{version}/"));
    }
    None
}

fn shape_type(shape: &Value) -> &str {
    shape.get("type").and_then(Value::as_str).unwrap_or("")
}

fn capitalize(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

/// At most [`QUOTED_CHARS`] characters of `text`, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}...", text.get(..end).unwrap_or_default()),
        None => text.to_string(),
    }
}

fn serialization(message: String) -> ParseError {
    ParseError::Serialization(message)
}

fn not_recognized(name: &str) -> ParseError {
    serialization(format!("the parameter {} is not recognized", shorten(name)))
}

fn invalid(value: &str, path: &str, what: &str) -> ParseError {
    serialization(format!(
        "Value '{}' for parameter {path} is not a valid {what}",
        shorten(value)
    ))
}

fn wrong_type(path: &str, expected: &str, value: &Value) -> String {
    let found = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let path = if path.is_empty() { "the output" } else { path };
    format!("{path}: expected a value of shape type {expected}, found {found}")
}

fn open(out: &mut String, tag: &str) {
    out.push('<');
    out.push_str(tag);
    out.push('>');
}

fn open_with_namespace(out: &mut String, tag: &str, namespace: Option<&str>) {
    out.push('<');
    out.push_str(tag);
    if let Some(ns) = namespace {
        out.push_str(" xmlns=\"");
        escape_into(out, ns);
        out.push('"');
    }
    out.push('>');
}

fn close(out: &mut String, tag: &str) {
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn text_element(out: &mut String, tag: &str, text: &str) {
    open(out, tag);
    escape_into(out, text);
    close(out, tag);
}

/// Appends `text` escaped for XML content or attributes: the five markup characters as entities,
/// tab, newline and carriage return as character references (so they survive normalization), and
/// the characters XML 1.0 cannot carry at all (other C0 controls, U+FFFE, U+FFFF) as U+FFFD.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\u{0}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ELB_NS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

    fn elbv2() -> Value {
        serde_json::from_str(include_str!("../models/elbv2-2015-12-01.json"))
            .expect("the vendored ELBv2 model is JSON")
    }

    fn form(body: &str) -> Vec<(String, String)> {
        decode_form(body.as_bytes()).expect("the test body is a valid form")
    }

    fn parse(shape: &str, body: &str) -> Result<Value, ParseError> {
        params_to_json(&elbv2(), shape, &form(body), false)
    }

    fn parsed(shape: &str, body: &str) -> Value {
        parse(shape, body).expect("the test parameters parse")
    }

    fn refused(shape: &str, body: &str) -> String {
        match parse(shape, body) {
            Err(ParseError::Serialization(message)) => message,
            other => panic!("{body} should be refused as malformed, got {other:?}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn decodes_forms() {
        let decoded = decode_form(
            b"Action=CreateTargetGroup&Name=a+b%2Fc&Empty=&Flag&&Pct=100%25&Bad=%zz&Acc=%C3%A9",
        )
        .expect("a valid form decodes");
        assert_eq!(
            decoded,
            pairs(&[
                ("Action", "CreateTargetGroup"),
                ("Name", "a b/c"),
                ("Empty", ""),
                ("Flag", ""),
                ("Pct", "100%"),
                ("Bad", "%zz"),
                ("Acc", "é"),
            ]),
            "percent-decoding, + as space, empty values or stray % are wrong"
        );
        assert!(
            decode_form(b"").expect("an empty body decodes").is_empty(),
            "an empty body is no parameters"
        );
        assert!(
            matches!(decode_form(b"Name=%FF"), Err(ParseError::Serialization(_))),
            "percent-encoded invalid UTF-8 must be refused"
        );
        assert!(
            matches!(decode_form(b"Name=\xff"), Err(ParseError::Serialization(_))),
            "raw invalid UTF-8 must be refused"
        );
    }

    #[test]
    fn parses_create_target_group() {
        let value = parsed(
            "CreateTargetGroupInput",
            "Name=web&Protocol=HTTP&Port=8080&VpcId=vpc-1&HealthCheckPath=%2Fhealth\
             &HealthCheckIntervalSeconds=15&HealthCheckEnabled=true&Matcher.HttpCode=200-299\
             &Tags.member.1.Key=env&Tags.member.1.Value=prod\
             &Tags.member.2.Key=team&Tags.member.2.Value=a+b",
        );
        assert_eq!(
            value,
            json!({
                "Name": "web",
                "Protocol": "HTTP",
                "Port": 8080,
                "VpcId": "vpc-1",
                "HealthCheckPath": "/health",
                "HealthCheckIntervalSeconds": 15,
                "HealthCheckEnabled": true,
                "Matcher": {"HttpCode": "200-299"},
                "Tags": [
                    {"Key": "env", "Value": "prod"},
                    {"Key": "team", "Value": "a b"}
                ]
            }),
            "CreateTargetGroup's scalars, nested structure or tag list are wrong"
        );
    }

    #[test]
    fn parses_create_rule() {
        let value = parsed(
            "CreateRuleInput",
            "ListenerArn=arn%3Alistener&Priority=10\
             &Conditions.member.1.Field=path-pattern\
             &Conditions.member.1.PathPatternConfig.Values.member.1=%2Fapi%2F*\
             &Actions.member.1.Type=forward\
             &Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn=arn%3Atg1\
             &Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight=3\
             &Actions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn=arn%3Atg2\
             &Actions.member.1.ForwardConfig.TargetGroups.member.2.Weight=1",
        );
        assert_eq!(
            value,
            json!({
                "ListenerArn": "arn:listener",
                "Priority": 10,
                "Conditions": [
                    {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}
                ],
                "Actions": [{
                    "Type": "forward",
                    "ForwardConfig": {"TargetGroups": [
                        {"TargetGroupArn": "arn:tg1", "Weight": 3},
                        {"TargetGroupArn": "arn:tg2", "Weight": 1}
                    ]}
                }]
            }),
            "lists of structures holding lists of structures are rebuilt wrongly"
        );
    }

    #[test]
    fn list_items_follow_their_index_numbers_with_gaps() {
        let value = parsed(
            "RegisterTargetsInput",
            "TargetGroupArn=arn&Targets.member.10.Id=10.0.0.3&Targets.member.10.Port=82\
             &Targets.member.2.Id=10.0.0.2&Targets.member.1.Id=10.0.0.1&Targets.member.1.Port=80",
        );
        assert_eq!(
            value,
            json!({
                "TargetGroupArn": "arn",
                "Targets": [
                    {"Id": "10.0.0.1", "Port": 80},
                    {"Id": "10.0.0.2"},
                    {"Id": "10.0.0.3", "Port": 82}
                ]
            }),
            "targets must be ordered by numeric index (1, 2, 10), not by text or arrival"
        );
    }

    #[test]
    fn parses_target_group_attributes() {
        let value = parsed(
            "ModifyTargetGroupAttributesInput",
            "TargetGroupArn=arn&Attributes.member.1.Key=deregistration_delay.timeout_seconds\
             &Attributes.member.1.Value=30",
        );
        assert_eq!(
            value,
            json!({
                "TargetGroupArn": "arn",
                "Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}]
            }),
            "attribute values are strings, and dots in values are not separators"
        );
    }

    #[test]
    fn empty_list_is_an_empty_array() {
        assert_eq!(
            parsed("DescribeTargetGroupsInput", "Names="),
            json!({"Names": []}),
            "`Names=` is botocore's empty list"
        );
        assert_eq!(
            parsed("DescribeTargetGroupsInput", ""),
            json!({}),
            "no parameters is an empty input"
        );
        assert_eq!(
            refused("DescribeTargetGroupsInput", "Names=web"),
            "Value 'web' for parameter Names is not a valid list",
            "a value where a list belongs must be refused"
        );
    }

    #[test]
    fn bad_numbers_name_the_parameter() {
        assert_eq!(
            refused("CreateTargetGroupInput", "Name=a&Port=abc"),
            "Value 'abc' for parameter Port is not a valid integer",
            "a top-level integer that does not parse"
        );
        let nested = refused(
            "RegisterTargetsInput",
            "TargetGroupArn=arn&Targets.member.1.Id=i&Targets.member.1.Port=8o",
        );
        assert!(
            nested.contains("Targets.member.1.Port") && nested.contains("'8o'"),
            "a nested bad integer must name its full parameter: {nested}"
        );
        let too_big = refused("CreateTargetGroupInput", "Name=a&Port=99999999999");
        assert!(
            too_big.contains("Port"),
            "an integer beyond i32 must be refused: {too_big}"
        );
        let not_bool = refused("CreateTargetGroupInput", "Name=a&HealthCheckEnabled=yes");
        assert!(
            not_bool.contains("HealthCheckEnabled") && not_bool.contains("boolean"),
            "a boolean other than true/false must be refused: {not_bool}"
        );
    }

    #[test]
    fn unknown_and_malformed_parameters_are_refused() {
        for (body, name) in [
            ("Name=a&Bogus=1", "Bogus"),
            ("Name=a&Tags.member.1.Colour=red", "Tags.member.1.Colour"),
            ("Name=a&Tags.item.1.Key=k", "Tags.item"),
            ("Name=a&Tags.1.Key=k", "Tags.1"),
            ("Name=a&Tags.member.0.Key=k", "Tags.member.0"),
            ("Name=a&Tags.member.01.Key=k", "Tags.member.01"),
            ("Name=a&Tags.member.x.Key=k", "Tags.member.x"),
            ("Name=a&Name.x=1", "Name.x"),
            ("Name.=a", "Name."),
            ("name=a", "name"),
        ] {
            assert_eq!(
                refused("CreateTargetGroupInput", body),
                format!("the parameter {name} is not recognized"),
                "{body} must be refused naming {name}"
            );
        }
        let index = refused("CreateTargetGroupInput", "Tags.member.10001.Key=k");
        assert!(
            index.contains("10000"),
            "an index beyond the limit must be refused: {index}"
        );
        let twice = refused("CreateTargetGroupInput", "Name=a&Name=b");
        assert!(
            twice.contains("more than once"),
            "a repeated parameter must be refused: {twice}"
        );
        let structure = refused("CreateTargetGroupInput", "Name=a&Matcher=200");
        assert!(
            structure.contains("Matcher") && structure.contains("structure"),
            "a value where a structure belongs must be refused: {structure}"
        );
        let deep = format!("Tags{}=x", ".member.1".repeat(60));
        let deep = refused("CreateTargetGroupInput", &deep);
        assert!(
            deep.contains("nested too deeply"),
            "a very deep name must be refused before any recursion: {deep}"
        );
    }

    #[test]
    fn writes_describe_target_groups() {
        let output = json!({
            "TargetGroups": [{
                "TargetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/web/1",
                "TargetGroupName": "a<b>&\"c'",
                "Port": 80,
                "HealthCheckEnabled": true,
                "LoadBalancerArns": ["arn:lb"],
                "Matcher": {"HttpCode": "200"},
                "VpcId": null
            }],
            "NextMarker": null
        });
        let xml = write_response(&elbv2(), "DescribeTargetGroups", &output, "req-1")
            .expect("a well-typed output is written");
        let head = format!(
            "{XML_DECLARATION}<DescribeTargetGroupsResponse xmlns=\"{ELB_NS}\">\
             <DescribeTargetGroupsResult><TargetGroups><member>"
        );
        assert!(
            xml.starts_with(&head),
            "response, result wrapper or list member elements are wrong: {xml}"
        );
        assert!(
            xml.ends_with(
                "</member></TargetGroups></DescribeTargetGroupsResult><ResponseMetadata>\
                 <RequestId>req-1</RequestId></ResponseMetadata></DescribeTargetGroupsResponse>"
            ),
            "the result must close before the response metadata: {xml}"
        );
        for fragment in [
            "<TargetGroupName>a&lt;b&gt;&amp;&quot;c&apos;</TargetGroupName>",
            "<TargetGroupArn>arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/web/1</TargetGroupArn>",
            "<Port>80</Port>",
            "<HealthCheckEnabled>true</HealthCheckEnabled>",
            "<LoadBalancerArns><member>arn:lb</member></LoadBalancerArns>",
            "<Matcher><HttpCode>200</HttpCode></Matcher>",
        ] {
            assert!(xml.contains(fragment), "missing {fragment} in {xml}");
        }
        assert!(
            !xml.contains("VpcId") && !xml.contains("NextMarker"),
            "null members must be left out: {xml}"
        );
    }

    #[test]
    fn writes_timestamps_as_iso8601_with_milliseconds() {
        let output = json!({"LoadBalancers": [
            {
                "LoadBalancerName": "lb",
                "CreatedTime": 1_796_040_000.25,
                "State": {"Code": "active"},
                "AvailabilityZones": [{"ZoneName": "us-east-1a", "SubnetId": "subnet-1"}]
            },
            {"LoadBalancerName": "lb2", "CreatedTime": 1_796_040_000}
        ]});
        let xml = write_response(&elbv2(), "DescribeLoadBalancers", &output, "req-2")
            .expect("a well-typed output is written");
        for fragment in [
            "<DescribeLoadBalancersResult><LoadBalancers><member>",
            "<CreatedTime>2026-11-30T12:00:00.250Z</CreatedTime>",
            "<CreatedTime>2026-11-30T12:00:00.000Z</CreatedTime>",
            "<State><Code>active</Code></State>",
            "<AvailabilityZones><member>",
            "<SubnetId>subnet-1</SubnetId>",
        ] {
            assert!(xml.contains(fragment), "missing {fragment} in {xml}");
        }
    }

    #[test]
    fn empty_output_is_an_empty_result_and_metadata() {
        let expected = format!(
            "{XML_DECLARATION}<DeregisterTargetsResponse xmlns=\"{ELB_NS}\">\
             <DeregisterTargetsResult></DeregisterTargetsResult><ResponseMetadata>\
             <RequestId>req-3</RequestId></ResponseMetadata></DeregisterTargetsResponse>"
        );
        for output in [json!({}), Value::Null] {
            assert_eq!(
                write_response(&elbv2(), "DeregisterTargets", &output, "req-3")
                    .expect("an empty output is written"),
                expected,
                "an empty output is an empty result wrapper and the request id"
            );
        }
    }

    #[test]
    fn wrong_output_types_are_errors() {
        let output = json!({"TargetGroups": [{"Port": "80"}]});
        let error = write_response(&elbv2(), "DescribeTargetGroups", &output, "r")
            .expect_err("a string for an integer must be refused");
        assert!(
            error.contains("TargetGroups[0].Port"),
            "the error must name the member: {error}"
        );
        assert!(
            write_response(
                &elbv2(),
                "DescribeTargetGroups",
                &json!({"TargetGroups": {}}),
                "r"
            )
            .is_err(),
            "an object for a list must be refused"
        );
        assert!(
            write_response(&elbv2(), "NoSuchOperation", &json!({}), "r").is_err(),
            "an operation the model lacks must be refused"
        );
    }

    #[test]
    fn writes_query_errors_escaped() {
        let xml = write_error(
            &elbv2(),
            "TargetGroupNotFound",
            "no <such> group & \"co\"\u{1}\n",
            true,
            "req-4",
        );
        assert_eq!(
            xml,
            format!(
                "{XML_DECLARATION}<ErrorResponse xmlns=\"{ELB_NS}\"><Error><Type>Sender</Type>\
                 <Code>TargetGroupNotFound</Code>\
                 <Message>no &lt;such&gt; group &amp; &quot;co&quot;\u{FFFD}&#xA;</Message>\
                 </Error><RequestId>req-4</RequestId></ErrorResponse>"
            ),
            "the query error document or its escaping is wrong"
        );
        assert!(
            write_error(&elbv2(), "InternalFailure", "boom", false, "r")
                .contains("<Type>Receiver</Type>"),
            "a server fault is the receiver's"
        );
    }

    #[test]
    fn reads_error_codes() {
        let model = elbv2();
        assert_eq!(
            error_code(&model, "TargetGroupNotFoundException"),
            Some(("TargetGroupNotFound".to_string(), 400, true)),
            "the error member's code, status and sender fault"
        );
        assert_eq!(
            error_code(&model, "TargetGroup"),
            None,
            "a non-exception shape has no code"
        );
        assert_eq!(
            error_code(&model, "NoSuchShape"),
            None,
            "an unknown shape has no code"
        );
        let bare = json!({"shapes": {
            "Boom": {"type": "structure", "members": {}, "exception": true, "fault": true},
            "Oops": {"type": "structure", "members": {}, "exception": true}
        }});
        assert_eq!(
            error_code(&bare, "Boom"),
            Some(("Boom".to_string(), 500, false)),
            "a fault without an error member is the receiver's 500, coded by its name"
        );
        assert_eq!(
            error_code(&bare, "Oops"),
            Some(("Oops".to_string(), 400, true)),
            "an exception without an error member is the sender's 400"
        );
    }

    /// A query model with a flattened list (renamed by its member), a flattened map with named
    /// key and value, a plain map and a unixTimestamp member.
    fn flattened_model() -> Value {
        serde_json::from_str(
            r#"
            {
              "metadata": {"protocol": "query", "apiVersion": "2020-01-01", "xmlNamespace": "urn:test"},
              "operations": {
                "DoThing": {"name": "DoThing", "input": {"shape": "Thing"}, "output": {"shape": "Thing", "resultWrapper": "DoThingResult"}}
              },
              "shapes": {
                "Thing": {"type": "structure", "members": {"Items": {"shape": "ItemList"}, "Attrs": {"shape": "AttrMap", "locationName": "Attribute"}, "Plain": {"shape": "PlainMap"}, "When": {"shape": "Stamp", "timestampFormat": "unixTimestamp"}}},
                "ItemList": {"type": "list", "flattened": true, "member": {"shape": "String", "locationName": "Item"}},
                "AttrMap": {"type": "map", "flattened": true, "key": {"shape": "String", "locationName": "Name"}, "value": {"shape": "String", "locationName": "Value"}},
                "PlainMap": {"type": "map", "key": {"shape": "String"}, "value": {"shape": "Integer"}},
                "String": {"type": "string"},
                "Integer": {"type": "integer"},
                "Stamp": {"type": "timestamp"}
              }
            }
            "#,
        )
        .expect("the test model is JSON")
    }

    #[test]
    fn query_flattened_lists_and_maps() {
        let model = flattened_model();
        let params = pairs(&[
            ("Item.2", "y"),
            ("Item.1", "x"),
            ("Attribute.1.Name", "color"),
            ("Attribute.1.Value", "red"),
            ("Plain.entry.1.key", "a"),
            ("Plain.entry.1.value", "1"),
            ("When", "2026-11-30T12:00:00.5Z"),
        ]);
        assert_eq!(
            params_to_json(&model, "Thing", &params, false).expect("flattened parameters parse"),
            json!({
                "Items": ["x", "y"],
                "Attrs": {"color": "red"},
                "Plain": {"a": 1},
                "When": 1_796_040_000.5
            }),
            "flattened lists, flattened or plain maps, or ISO timestamps parse wrongly"
        );
        let epoch = pairs(&[("When", "1796040000")]);
        assert_eq!(
            params_to_json(&model, "Thing", &epoch, false).expect("epoch seconds parse"),
            json!({"When": 1_796_040_000.0}),
            "a timestamp may be given in epoch seconds"
        );
        let missing = pairs(&[("Plain.entry.1.key", "a")]);
        assert_eq!(
            params_to_json(&model, "Thing", &missing, false),
            Err(ParseError::Missing("Plain.entry.1.value".to_string())),
            "a map entry without its value must be refused"
        );

        let output = json!({
            "Items": ["x", "y"],
            "Attrs": {"color": "red"},
            "Plain": {"a": 1},
            "When": 1_796_040_000.5
        });
        let xml = write_response(&model, "DoThing", &output, "req-5")
            .expect("a well-typed output is written");
        for fragment in [
            "<DoThingResponse xmlns=\"urn:test\"><DoThingResult>",
            "<Item>x</Item><Item>y</Item>",
            "<Attribute><Name>color</Name><Value>red</Value></Attribute>",
            "<Plain><entry><key>a</key><value>1</value></entry></Plain>",
            "<When>1796040000.5</When>",
        ] {
            assert!(xml.contains(fragment), "missing {fragment} in {xml}");
        }
    }

    /// An EC2-style model: capitalized locationNames and queryName on input, flattened lists,
    /// `<item>` lists and lowercase names on output.
    fn ec2_model() -> Value {
        serde_json::from_str(
            r#"
            {
              "metadata": {"apiVersion": "2016-11-15", "protocol": "ec2", "xmlNamespace": "http://ec2.amazonaws.com/doc/2016-11-15/"},
              "operations": {
                "DescribeThings": {"name": "DescribeThings", "input": {"shape": "DescribeThingsRequest"}, "output": {"shape": "DescribeThingsResult"}},
                "DeleteThing": {"name": "DeleteThing", "input": {"shape": "DeleteThingRequest"}}
              },
              "shapes": {
                "DescribeThingsRequest": {"type": "structure", "members": {"Filters": {"shape": "FilterList", "locationName": "Filter"}, "ThingIds": {"shape": "ThingIdList", "locationName": "ThingId"}, "DryRun": {"shape": "Boolean", "locationName": "dryRun"}, "MaxResults": {"shape": "Integer", "queryName": "MaxItems", "locationName": "maxResults"}, "Since": {"shape": "DateTime"}}},
                "FilterList": {"type": "list", "member": {"shape": "Filter", "locationName": "Filter"}},
                "Filter": {"type": "structure", "members": {"Name": {"shape": "String"}, "Values": {"shape": "ValueStringList", "locationName": "Value"}}},
                "ValueStringList": {"type": "list", "member": {"shape": "String", "locationName": "item"}},
                "ThingIdList": {"type": "list", "member": {"shape": "String", "locationName": "ThingId"}},
                "DescribeThingsResult": {"type": "structure", "members": {"Things": {"shape": "ThingList", "locationName": "thingSet"}, "NextToken": {"shape": "String", "locationName": "nextToken"}}},
                "ThingList": {"type": "list", "member": {"shape": "Thing", "locationName": "item"}},
                "Thing": {"type": "structure", "members": {"ThingId": {"shape": "String", "locationName": "thingId"}, "LaunchTime": {"shape": "DateTime", "locationName": "launchTime"}, "Tags": {"shape": "TagList", "locationName": "tagSet"}, "Count": {"shape": "Integer", "locationName": "count"}}},
                "TagList": {"type": "list", "member": {"shape": "Tag"}},
                "Tag": {"type": "structure", "members": {"Key": {"shape": "String", "locationName": "key"}, "Value": {"shape": "String", "locationName": "value"}}},
                "DeleteThingRequest": {"type": "structure", "members": {"ThingId": {"shape": "String"}}},
                "String": {"type": "string"},
                "Boolean": {"type": "boolean"},
                "Integer": {"type": "integer"},
                "DateTime": {"type": "timestamp"}
              }
            }
            "#,
        )
        .expect("the test model is JSON")
    }

    #[test]
    fn ec2_parses_flattened_lists_by_capitalized_location_name() {
        let model = ec2_model();
        assert!(is_ec2(&model), "the model's protocol is ec2");
        assert!(!is_ec2(&elbv2()), "ELBv2's protocol is query");
        let params = form(
            "Filter.1.Name=state&Filter.1.Value.1=running&Filter.1.Value.2=pending\
             &Filter.2.Name=tag%3Aenv&Filter.2.Value.1=prod&ThingId.2=t-2&ThingId.1=t-1\
             &DryRun=false&MaxItems=5&Since=2026-11-30T12%3A00%3A00Z",
        );
        assert_eq!(
            params_to_json(&model, "DescribeThingsRequest", &params, true)
                .expect("EC2 parameters parse"),
            json!({
                "Filters": [
                    {"Name": "state", "Values": ["running", "pending"]},
                    {"Name": "tag:env", "Values": ["prod"]}
                ],
                "ThingIds": ["t-1", "t-2"],
                "DryRun": false,
                "MaxResults": 5,
                "Since": 1_796_040_000.0
            }),
            "EC2 names (queryName, capitalized locationName) or Name.N lists parse wrongly"
        );
        for name in ["Filter.member.1.Name", "Filters.1.Name", "MaxResults"] {
            let params = pairs(&[(name, "x")]);
            assert!(
                matches!(
                    params_to_json(&model, "DescribeThingsRequest", &params, true),
                    Err(ParseError::Serialization(_))
                ),
                "{name} is not an EC2 parameter name of this model"
            );
        }
    }

    #[test]
    fn ec2_writes_items_and_request_id() {
        let model = ec2_model();
        let output = json!({
            "Things": [{
                "ThingId": "t-1",
                "LaunchTime": 1_796_040_000,
                "Tags": [{"Key": "env", "Value": "prod"}],
                "Count": 2
            }],
            "NextToken": null
        });
        let xml = write_response(&model, "DescribeThings", &output, "req-6")
            .expect("a well-typed EC2 output is written");
        let head = format!(
            "{XML_DECLARATION}<DescribeThingsResponse \
             xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>req-6</requestId><thingSet><item>"
        );
        assert!(
            xml.starts_with(&head),
            "EC2 responses start with requestId, then members by locationName: {xml}"
        );
        assert!(
            xml.ends_with("</item></thingSet></DescribeThingsResponse>"),
            "EC2 responses have no result wrapper or ResponseMetadata: {xml}"
        );
        for fragment in [
            "<thingId>t-1</thingId>",
            "<launchTime>2026-11-30T12:00:00.000Z</launchTime>",
            "<tagSet><item>",
            "<key>env</key>",
            "<value>prod</value>",
            "</item></tagSet>",
            "<count>2</count>",
        ] {
            assert!(xml.contains(fragment), "missing {fragment} in {xml}");
        }
        assert!(
            !xml.contains("nextToken"),
            "null members are left out: {xml}"
        );

        assert_eq!(
            write_response(&model, "DeleteThing", &Value::Null, "req-7")
                .expect("an operation without output is written"),
            format!(
                "{XML_DECLARATION}<DeleteThingResponse \
                 xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <requestId>req-7</requestId></DeleteThingResponse>"
            ),
            "an EC2 operation without output answers only its request id"
        );
        assert_eq!(
            write_error(
                &model,
                "InvalidThingID.NotFound",
                "The thing 't-9' is gone",
                true,
                "req-8"
            ),
            format!(
                "{XML_DECLARATION}<Response><Errors><Error><Code>InvalidThingID.NotFound</Code>\
                 <Message>The thing &apos;t-9&apos; is gone</Message></Error></Errors>\
                 <RequestID>req-8</RequestID></Response>"
            ),
            "the EC2 error document is wrong"
        );
    }
}
