//! CloudWatch Logs' filter-pattern language, as `FilterLogEvents`, metric filters and
//! subscription filters speak it.
//!
//! The semantics follow AWS's "Filter pattern syntax for metric filters, subscription filters,
//! filter log events, and Live Tail"
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html>,
//! whose archived source is `doc_source/FilterAndPatternSyntax.md` in
//! `awsdocs/amazon-cloudwatch-logs-user-guide`). A pattern is one of three kinds, told apart by
//! its first non-blank character:
//!
//! * **Terms** (anything but `{` or `[`). Every term must occur in the message as a
//!   case-sensitive *substring*: the docs' own example has `ERROR` matching
//!   `Exiting with ERRORCODE: -1`. An unquoted term may hold only letters, digits and `_`
//!   ("terms that include characters other than alphanumeric or underscore must be placed inside
//!   double quotes"); anything else is rejected, as AWS rejects it. `"an exact phrase"` matches
//!   verbatim; inside quotes `\"` is a quote and `\\` a backslash (the escaping the AWS CDK
//!   applies when it quotes terms), any other backslash is itself. `-term` excludes a term (the
//!   docs also write `"ERROR" - "Exiting"`, so blanks may follow the `-`). `?term` opens an
//!   alternative: the pattern is a disjunction of groups, each `?` starting a new group and the
//!   terms after it joining that group (the CDK renders "any of these term groups" as
//!   `?"a" "b" ?"c" "d"`); terms before the first `?` form the first group. An empty pattern
//!   matches every event.
//! * **JSON** (`{ … }`). Conditions `SELECTOR op VALUE`, `SELECTOR IS TRUE|FALSE|NULL` and
//!   `SELECTOR NOT EXISTS`, combined with `&&`, `||` and parentheses (`()` binds tighter than
//!   `&&`, which binds tighter than `||`). A selector is `$` followed by `.property` and
//!   `[index]` steps (an index must follow a property). `=` and `!=` with a string (quoted, or
//!   unquoted without special characters) compare the whole value; a `*` at the start or end is
//!   a wildcard, one in the middle is literal ("`Ev*ent` will only match the actual string
//!   `Ev*ent`"). A number value (`400`, `-1.5`, `+1000`, `10e-3`) compares numerically with `=`,
//!   `!=`, `<`, `<=`, `>`, `>=`. The selector must reach a value node (string, number or
//!   boolean); on an object, an array or a missing property both `=` and `!=` fail. The message
//!   must parse as JSON, or the event does not match.
//! * **Space-delimited** (`[ … ]`). Named fields separated by commas, each optionally with a
//!   condition like the JSON ones (`status_code = 4*`, `bytes > 1000`,
//!   `status_code = 4* || status_code = 5*`, which may also name other fields of the pattern);
//!   `...` stands for any number of fields and an empty entry for one unnamed field (the docs'
//!   `[..., request=*.html*, status_code=4*,]` extracts a seventh field `$7`). The message is
//!   split on blanks, a `"quoted"` or `[bracketed]` run counting as one field without its
//!   delimiters, and must have exactly as many fields as the pattern (the docs' `[w1=ERROR, w2]`
//!   matches `ERROR message` but not `ERROR WARN message`), unless `...` absorbs the rest.
//!
//! For metric filters, [`Pattern::extract`] returns what a matching event yields, as
//! `TestMetricFilter`'s `extractedValues`: nothing for terms patterns; for JSON patterns the
//! text of each value node the conditions' selectors reach, keyed `$.a.b[0]`; for
//! space-delimited ones the field placed on each entry, keyed `$name`, or `$N` (the entry's
//! 1-based position, `...` entries counted) when unnamed. [`Pattern::select`] reads a metric
//! value or dimension selector out of a matching event (any `$.path` for JSON patterns), and
//! [`Pattern::check_selector`] tells whether a selector can ever resolve for the pattern.
//!
//! Regular expressions (`%…%`) are not supported and are rejected with an error.

use std::collections::BTreeMap;
use std::str::FromStr;

use memchr::memmem::Finder;
use serde_json::Value;

/// A parsed filter pattern, ready to test event messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    kind: Kind,
}

/// Why a filter pattern was rejected: where, and what is wrong there.
///
/// Its `Display` is the message for Logs' `InvalidParameterException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter pattern at position {position}: {message}")]
pub struct PatternError {
    /// 0-based position, in characters, of the offending part of the pattern.
    pub position: usize,
    /// What is wrong there, in a few words.
    pub message: String,
}

impl Pattern {
    /// Parses a filter pattern. The empty pattern (or one of blanks only) matches everything.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let kind = match text.trim_start().chars().next() {
            Some('{') => Kind::Json(Parser::new(text).parse_json()?),
            Some('[') => Kind::Delimited(Parser::new(text).parse_delimited()?),
            _ => Kind::Terms(parse_terms(text)?),
        };
        Ok(Pattern { kind })
    }

    /// Does one event's message match?
    ///
    /// Term patterns allocate nothing; JSON patterns parse the message, space-delimited ones
    /// split it.
    pub fn matches(&self, message: &str) -> bool {
        match &self.kind {
            Kind::Terms(groups) => {
                groups.is_empty() || groups.iter().any(|group| group.matches(message.as_bytes()))
            }
            Kind::Json(expr) => json_match(expr, message).is_some(),
            Kind::Delimited(delimited) => delimited.matches(message),
        }
    }

    /// The values a matching message yields, as CloudWatch's `TestMetricFilter` reports them
    /// in `extractedValues`; `None` when the message does not match.
    ///
    /// * Terms patterns yield nothing (an empty map).
    /// * JSON patterns yield, for each selector their conditions name (keyed as CloudWatch
    ///   writes it, `$.a.b[0]`), the value it reaches as text: a string without its quotes, a
    ///   number as serde_json writes it, `true`, `false` or `null`. Selectors that reach
    ///   nothing (under `NOT EXISTS`, on the false side of `||`) or reach an object or an
    ///   array are left out.
    /// * Space-delimited patterns yield the message field placed on each field entry, keyed
    ///   `$name`, or `$N` for an unnamed field (N is the entry's 1-based position in the
    ///   pattern, `...` entries counted; they yield nothing themselves).
    pub fn extract(&self, message: &str) -> Option<BTreeMap<String, String>> {
        match &self.kind {
            Kind::Terms(_) => self.matches(message).then(BTreeMap::new),
            Kind::Json(expr) => {
                let root = json_match(expr, message)?;
                let mut values = BTreeMap::new();
                for condition in expr.conditions() {
                    if let Some(text) = resolve(&root, &condition.selector).and_then(value_text) {
                        values.insert(render_selector(&condition.selector), text);
                    }
                }
                Some(values)
            }
            Kind::Delimited(delimited) => {
                let fields = split_fields(message);
                let aligned = delimited.aligned(&fields)?;
                let mut values = BTreeMap::new();
                for (index, (entry, value)) in delimited.entries.iter().zip(aligned).enumerate() {
                    let Entry::Field(field) = entry else {
                        continue;
                    };
                    let key = field.selector(index);
                    if field.name.is_some() {
                        values.insert(key, value.to_owned());
                    } else {
                        // A field named like an unnamed one's `$N` takes the key, as in `select`.
                        values.entry(key).or_insert_with(|| value.to_owned());
                    }
                }
                Some(values)
            }
        }
    }

    /// The value a metric transformation's `metricValue`, or a dimension's value, selects from
    /// a message: `$.path` for JSON patterns (any path, not only those the pattern names),
    /// `$name` or `$N` for space-delimited ones, as [`Pattern::extract`] keys them.
    ///
    /// `None` when the message does not match, or the selector is not valid for the pattern
    /// (see [`Pattern::check_selector`]) or reaches no value node (string, number, boolean or
    /// null) in this message.
    pub fn select(&self, message: &str, selector: &str) -> Option<String> {
        match &self.kind {
            Kind::Terms(_) => None,
            Kind::Json(expr) => {
                let steps = parse_json_selector(selector).ok()?;
                let root = json_match(expr, message)?;
                resolve(&root, &steps).and_then(value_text)
            }
            Kind::Delimited(delimited) => {
                let index = delimited.entry_for(selector)?;
                let fields = split_fields(message);
                let aligned = delimited.aligned(&fields)?;
                aligned.get(index).map(|value| (*value).to_owned())
            }
        }
    }

    /// Whether `selector` can ever select a value for this pattern: a valid `$.path` for JSON
    /// patterns; `$name` of a named field or `$N` of an unnamed one (N its 1-based position)
    /// for space-delimited ones; nothing for terms patterns, which have no fields.
    pub fn check_selector(&self, selector: &str) -> Result<(), PatternError> {
        match &self.kind {
            Kind::Terms(_) => Err(PatternError {
                position: 0,
                message: "a terms pattern has no fields to select".to_owned(),
            }),
            Kind::Json(_) => parse_json_selector(selector).map(|_| ()),
            Kind::Delimited(delimited) => match delimited.entry_for(selector) {
                Some(_) => Ok(()),
                None => {
                    let known = delimited.selectors();
                    let message = if known.is_empty() {
                        format!("unknown field '{selector}': the pattern has no fields")
                    } else {
                        format!(
                            "unknown field '{selector}': the pattern's fields are {}",
                            known.join(", ")
                        )
                    };
                    Err(PatternError {
                        position: 0,
                        message,
                    })
                }
            },
        }
    }

    /// Strings that every matching message contains, so that a whole batch of messages without
    /// one of them can be skipped with a fast substring search before matching event by event.
    ///
    /// Empty when nothing is required: alternatives (`?a ?b`), JSON patterns (a JSON message
    /// may spell a value with escapes), or conditions that are negated, numeric or or-ed.
    pub fn required_literals(&self) -> Vec<String> {
        match &self.kind {
            Kind::Terms(groups) => match groups.as_slice() {
                [only] => only
                    .include
                    .iter()
                    .filter(|term| !term.text.is_empty())
                    .map(|term| term.text.clone())
                    .collect(),
                _ => Vec::new(),
            },
            Kind::Json(_) => Vec::new(),
            Kind::Delimited(delimited) => delimited.required_literals(),
        }
    }

    /// True when every message matches (the empty pattern, `""`, `[...]`), so callers can skip
    /// matching altogether.
    pub fn matches_everything(&self) -> bool {
        match &self.kind {
            Kind::Terms(groups) => {
                groups.is_empty() || groups.iter().any(TermGroup::matches_everything)
            }
            Kind::Json(_) => false,
            Kind::Delimited(delimited) => delimited
                .entries
                .iter()
                .all(|entry| matches!(entry, Entry::Ellipsis)),
        }
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Pattern::parse(text)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Alternatives: an event matches if any group does; with no groups, every event matches.
    Terms(Vec<TermGroup>),
    Json(Expr<JsonCondition>),
    Delimited(Delimited),
}

const REGEX_UNSUPPORTED: &str = "regular-expression patterns (%...%) are not supported";
const UNBALANCED_QUOTE: &str = "unbalanced quote";

// ---------------------------------------------------------------------------------------------
// Terms

/// Terms that must all occur, and terms none of which may occur.
#[derive(Debug, Clone, Default, PartialEq)]
struct TermGroup {
    include: Vec<Term>,
    exclude: Vec<Term>,
}

impl TermGroup {
    fn add(&mut self, term: Term, excluded: bool) {
        if excluded {
            self.exclude.push(term);
        } else {
            self.include.push(term);
        }
    }

    fn matches(&self, message: &[u8]) -> bool {
        self.include.iter().all(|term| term.occurs_in(message))
            && !self.exclude.iter().any(|term| term.occurs_in(message))
    }

    fn matches_everything(&self) -> bool {
        self.exclude.is_empty() && self.include.iter().all(|term| term.text.is_empty())
    }
}

/// A literal with its precompiled substring searcher.
#[derive(Debug, Clone)]
struct Term {
    text: String,
    finder: Finder<'static>,
}

impl Term {
    fn new(text: String) -> Term {
        let finder = Finder::new(text.as_bytes()).into_owned();
        Term { text, finder }
    }

    fn occurs_in(&self, message: &[u8]) -> bool {
        self.finder.find(message).is_some()
    }
}

impl PartialEq for Term {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

fn is_term_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn parse_terms(pattern: &str) -> Result<Vec<TermGroup>, PatternError> {
    let mut cursor = Cursor::new(pattern);
    let mut groups: Vec<TermGroup> = Vec::new();
    loop {
        cursor.skip_whitespace();
        let start = cursor.pos;
        if cursor.peek_char().is_none() {
            return Ok(groups);
        }
        let opens_group = cursor.eat('?');
        let excluded = cursor.eat('-');
        if opens_group || excluded {
            cursor.skip_whitespace();
        }
        let term_start = cursor.pos;
        let literal = match cursor.peek_char() {
            None => {
                let prefix = if excluded { '-' } else { '?' };
                return Err(cursor.error(start, format!("missing term after '{prefix}'")));
            }
            Some('"') => cursor.read_quoted()?,
            Some('%') => return Err(cursor.error(term_start, REGEX_UNSUPPORTED)),
            Some(c) if is_term_char(c) => cursor.take_while(is_term_char).to_owned(),
            Some(_) => return Err(invalid_term(&cursor, term_start, term_start)),
        };
        if cursor.peek_char().is_some_and(|c| !c.is_whitespace()) {
            return Err(invalid_term(&cursor, term_start, cursor.pos));
        }
        if opens_group || groups.is_empty() {
            groups.push(TermGroup::default());
        }
        if let Some(group) = groups.last_mut() {
            group.add(Term::new(literal), excluded);
        }
    }
}

fn invalid_term(cursor: &Cursor<'_>, term_start: usize, bad_at: usize) -> PatternError {
    let rest = cursor.src.get(term_start..).unwrap_or("");
    let token = rest.split(char::is_whitespace).next().unwrap_or(rest);
    cursor.error(
        bad_at,
        format!(
            "invalid character(s) in term '{token}': enclose terms that contain characters \
             other than letters, digits and '_' in double quotes"
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Conditions shared by JSON and space-delimited patterns

/// A boolean combination of conditions.
#[derive(Debug, Clone, PartialEq)]
enum Expr<C> {
    Cond(C),
    /// Two or more operands.
    And(Vec<Expr<C>>),
    /// Two or more operands.
    Or(Vec<Expr<C>>),
}

impl<C> Expr<C> {
    fn eval<F: FnMut(&C) -> bool>(&self, test: &mut F) -> bool {
        match self {
            Expr::Cond(condition) => test(condition),
            Expr::And(items) => items.iter().all(|item| item.eval(&mut *test)),
            Expr::Or(items) => items.iter().any(|item| item.eval(&mut *test)),
        }
    }

    fn try_map<D, E, F>(self, f: &mut F) -> Result<Expr<D>, E>
    where
        F: FnMut(C) -> Result<D, E>,
    {
        Ok(match self {
            Expr::Cond(condition) => Expr::Cond(f(condition)?),
            Expr::And(items) => Expr::And(
                items
                    .into_iter()
                    .map(|item| item.try_map(&mut *f))
                    .collect::<Result<Vec<_>, E>>()?,
            ),
            Expr::Or(items) => Expr::Or(
                items
                    .into_iter()
                    .map(|item| item.try_map(&mut *f))
                    .collect::<Result<Vec<_>, E>>()?,
            ),
        })
    }

    /// Every condition, leftmost first.
    fn conditions(&self) -> Vec<&C> {
        let mut out = Vec::new();
        self.gather(true, &mut out);
        out
    }

    /// The conditions that must all hold for the expression to hold (those not under an `||`).
    fn required_conditions(&self) -> Vec<&C> {
        let mut out = Vec::new();
        self.gather(false, &mut out);
        out
    }

    fn gather<'s>(&'s self, through_or: bool, out: &mut Vec<&'s C>) {
        match self {
            Expr::Cond(condition) => out.push(condition),
            Expr::And(items) => items.iter().for_each(|item| item.gather(through_or, out)),
            Expr::Or(items) if through_or => {
                items.iter().for_each(|item| item.gather(through_or, out));
            }
            Expr::Or(_) => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// `left op right`; equality is exact, as the docs promise "precise matching".
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
        }
    }
}

/// The right-hand side of a condition and how it compares.
#[derive(Debug, Clone, PartialEq)]
enum Comparison {
    /// `=` (or `!=`, negated) against a string, with `*` wildcards at either end.
    Text { negated: bool, matcher: TextMatch },
    /// Any operator against a number; the value compared must be a number too.
    Number { op: CmpOp, value: f64 },
}

impl Comparison {
    /// Against a space-delimited field (always text; numbers are parsed out of it).
    fn test_text(&self, text: &str) -> bool {
        match self {
            Comparison::Text { negated, matcher } => matcher.matches(text) != *negated,
            Comparison::Number { op, value } => {
                parse_number(text).is_some_and(|number| op.holds(number, *value))
            }
        }
    }

    /// Against a JSON value: strings, numbers and booleans compare as text by their JSON
    /// spelling; only numbers compare numerically; null, arrays and objects never match.
    fn test_json(&self, value: &Value) -> bool {
        match self {
            Comparison::Number { op, value: wanted } => value
                .as_f64()
                .is_some_and(|number| op.holds(number, *wanted)),
            Comparison::Text { .. } => match value {
                Value::String(text) => self.test_text(text),
                Value::Number(number) => self.test_text(&number.to_string()),
                Value::Bool(flag) => self.test_text(if *flag { "true" } else { "false" }),
                Value::Null | Value::Array(_) | Value::Object(_) => false,
            },
        }
    }

    /// A string any value passing this comparison contains.
    fn required_literal(&self) -> Option<&str> {
        match self {
            Comparison::Text {
                negated: false,
                matcher,
            } => matcher.literal(),
            Comparison::Text { .. } | Comparison::Number { .. } => None,
        }
    }
}

/// A string value with its wildcards resolved: a `*` at the start or end matches any text, one
/// in the middle is an ordinary character.
#[derive(Debug, Clone, PartialEq)]
enum TextMatch {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl TextMatch {
    fn new(value: &str) -> TextMatch {
        let leading = value.starts_with('*');
        let trailing = value.ends_with('*');
        let core = value.trim_matches('*').to_owned();
        match (leading, trailing) {
            (true, _) | (_, true) if core.is_empty() => TextMatch::Any,
            (false, false) => TextMatch::Exact(core),
            (false, true) => TextMatch::Prefix(core),
            (true, false) => TextMatch::Suffix(core),
            (true, true) => TextMatch::Contains(core),
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatch::Any => true,
            TextMatch::Exact(core) => text == core,
            TextMatch::Prefix(core) => text.starts_with(core.as_str()),
            TextMatch::Suffix(core) => text.ends_with(core.as_str()),
            TextMatch::Contains(core) => text.contains(core.as_str()),
        }
    }

    fn literal(&self) -> Option<&str> {
        match self {
            TextMatch::Any => None,
            TextMatch::Exact(core)
            | TextMatch::Prefix(core)
            | TextMatch::Suffix(core)
            | TextMatch::Contains(core) => Some(core.as_str()).filter(|core| !core.is_empty()),
        }
    }
}

/// The docs' NUMBER: an optional sign, digits with an optional fraction, an optional exponent.
fn parse_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits_from = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        at
    };
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let integer_end = digits_from(at);
    let mut digits = integer_end - at;
    at = integer_end;
    if bytes.get(at) == Some(&b'.') {
        let fraction_end = digits_from(at + 1);
        digits += fraction_end - (at + 1);
        at = fraction_end;
    }
    if digits == 0 {
        return None;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent_end = digits_from(at);
        if exponent_end == at {
            return None;
        }
        at = exponent_end;
    }
    if at != bytes.len() {
        return None;
    }
    text.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// JSON patterns

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
struct JsonCondition {
    selector: Vec<Step>,
    test: JsonTest,
}

#[derive(Debug, Clone, PartialEq)]
enum JsonTest {
    Compare(Comparison),
    IsTrue,
    IsFalse,
    IsNull,
    NotExists,
}

impl JsonCondition {
    fn holds(&self, root: &Value) -> bool {
        match (&self.test, resolve(root, &self.selector)) {
            (JsonTest::NotExists, found) => found.is_none(),
            (_, None) => false,
            (JsonTest::IsTrue, Some(value)) => value.as_bool() == Some(true),
            (JsonTest::IsFalse, Some(value)) => value.as_bool() == Some(false),
            (JsonTest::IsNull, Some(value)) => value.is_null(),
            (JsonTest::Compare(comparison), Some(value)) => comparison.test_json(value),
        }
    }
}

fn resolve<'v>(root: &'v Value, selector: &[Step]) -> Option<&'v Value> {
    selector.iter().try_fold(root, |value, step| match step {
        Step::Key(key) => value.as_object()?.get(key),
        Step::Index(index) => value.as_array()?.get(*index),
    })
}

/// The parsed message, when it is JSON and matches.
fn json_match(expr: &Expr<JsonCondition>, message: &str) -> Option<Value> {
    let root = serde_json::from_str::<Value>(message).ok()?;
    let matched = expr.eval(&mut |condition: &JsonCondition| condition.holds(&root));
    matched.then_some(root)
}

/// A value node as text (a string without quotes); `None` for objects and arrays.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null => Some("null".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// A selector as CloudWatch writes it: `$.a.b[0]`.
fn render_selector(selector: &[Step]) -> String {
    let mut text = String::from("$");
    for step in selector {
        match step {
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => {
                text.push('[');
                text.push_str(&index.to_string());
                text.push(']');
            }
        }
    }
    text
}

/// Parses a stand-alone JSON selector (a metric value or dimension), all of it.
fn parse_json_selector(text: &str) -> Result<Vec<Step>, PatternError> {
    let mut parser = Parser::new(text);
    let invalid = |error: PatternError| PatternError {
        position: error.position,
        message: format!("invalid selector '{text}': {}", error.message),
    };
    if parser.cursor.peek_char() != Some('$') {
        return Err(invalid(
            parser.error(0, "expected a JSON selector such as $.field"),
        ));
    }
    let steps = parser.lex_selector().map_err(invalid)?;
    let end = parser.cursor.pos;
    if end != text.len() {
        let rest = text.get(end..).unwrap_or("");
        return Err(invalid(
            parser.error(end, format!("unexpected '{rest}' after the selector")),
        ));
    }
    Ok(steps)
}

// ---------------------------------------------------------------------------------------------
// Space-delimited patterns

#[derive(Debug, Clone, PartialEq)]
struct Delimited {
    entries: Vec<Entry>,
    /// For each entry index (and one past the end), how many message fields the entries from
    /// there on need at least.
    fields_needed_from: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// `...`: any number of fields, none included.
    Ellipsis,
    /// Exactly one field.
    Field(Field),
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    /// `None` for an unnamed (empty) entry.
    name: Option<String>,
    condition: Option<Expr<FieldCondition>>,
    /// Whether the condition names only this field, so it can be checked as soon as the field
    /// is placed rather than once every field is.
    local: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldCondition {
    /// Index into `Delimited::entries` of the field compared.
    entry: usize,
    comparison: Comparison,
}

impl Field {
    /// How `extract` and `select` name this field, the entry at `index`: `$name`, or `$N`
    /// (1-based) when unnamed.
    fn selector(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("${name}"),
            None => format!("${}", index + 1),
        }
    }

    fn holds(&self, values: &[&str]) -> bool {
        self.condition.as_ref().is_none_or(|condition| {
            condition.eval(&mut |c: &FieldCondition| {
                values
                    .get(c.entry)
                    .is_some_and(|value| c.comparison.test_text(value))
            })
        })
    }
}

impl Delimited {
    fn new(entries: Vec<Entry>) -> Delimited {
        let mut fields_needed_from = vec![0; entries.len() + 1];
        for (index, entry) in entries.iter().enumerate().rev() {
            fields_needed_from[index] =
                fields_needed_from[index + 1] + usize::from(matches!(entry, Entry::Field(_)));
        }
        Delimited {
            entries,
            fields_needed_from,
        }
    }

    fn matches(&self, message: &str) -> bool {
        self.aligned(&split_fields(message)).is_some()
    }

    /// The field each entry is given by the first alignment that matches (`""` for `...`
    /// entries), or `None` when none does.
    fn aligned<'m>(&self, fields: &[&'m str]) -> Option<Vec<&'m str>> {
        let mut values: Vec<&'m str> = vec![""; self.entries.len()];
        let matched = self.align(0, 0, fields, &mut values);
        matched.then_some(values)
    }

    /// The entry `selector` names: `$name` of a named field, else `$N` of an unnamed one (N
    /// 1-based, written without leading zeros).
    fn entry_for(&self, selector: &str) -> Option<usize> {
        let key = selector.strip_prefix('$')?;
        let named = self.entries.iter().position(|entry| {
            matches!(entry, Entry::Field(Field { name: Some(name), .. }) if name.as_str() == key)
        });
        if named.is_some() {
            return named;
        }
        if key.is_empty() || key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index = key.parse::<usize>().ok()?.checked_sub(1)?;
        match self.entries.get(index) {
            Some(Entry::Field(Field { name: None, .. })) => Some(index),
            _ => None,
        }
    }

    /// Every field's selector, in pattern order.
    fn selectors(&self) -> Vec<String> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Field(field) => Some(field.selector(index)),
                Entry::Ellipsis => None,
            })
            .collect()
    }

    /// Places entries `entry..` on fields `next_field..`, trying every span for each `...`;
    /// `values` holds the field given to each entry so far.
    fn align<'m>(
        &self,
        entry: usize,
        next_field: usize,
        fields: &[&'m str],
        values: &mut [&'m str],
    ) -> bool {
        let needed = self.fields_needed_from.get(entry).copied().unwrap_or(0);
        if fields.len() < next_field + needed {
            return false;
        }
        match self.entries.get(entry) {
            None => next_field == fields.len() && self.deferred_conditions_hold(values),
            Some(Entry::Ellipsis) => (next_field..=fields.len() - needed)
                .any(|start| self.align(entry + 1, start, fields, &mut *values)),
            Some(Entry::Field(field)) => {
                values[entry] = fields[next_field];
                if field.local && !field.holds(values) {
                    return false;
                }
                self.align(entry + 1, next_field + 1, fields, values)
            }
        }
    }

    fn deferred_conditions_hold(&self, values: &[&str]) -> bool {
        self.entries.iter().all(|entry| match entry {
            Entry::Field(field) if !field.local => field.holds(values),
            Entry::Field(_) | Entry::Ellipsis => true,
        })
    }

    fn required_literals(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Field(field) => field.condition.as_ref(),
                Entry::Ellipsis => None,
            })
            .flat_map(Expr::required_conditions)
            .filter_map(|condition| condition.comparison.required_literal())
            .map(str::to_owned)
            .collect()
    }
}

/// Splits a message into fields at runs of ASCII whitespace; a field that starts with `"` runs
/// to the next `"`, one that starts with `[` to the next `]`, and is taken without them (an
/// unclosed one runs to the end of the message).
fn split_fields(message: &str) -> Vec<&str> {
    let bytes = message.as_bytes();
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        let closer = match byte {
            b'"' => b'"',
            b'[' => b']',
            _ if byte.is_ascii_whitespace() => {
                at += 1;
                continue;
            }
            _ => {
                let start = at;
                while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                fields.push(&message[start..at]);
                continue;
            }
        };
        let start = at + 1;
        match memchr::memchr(closer, &bytes[start..]) {
            Some(len) => {
                fields.push(&message[start..start + len]);
                at = start + len + 1;
            }
            None => {
                fields.push(&message[start..]);
                at = bytes.len();
            }
        }
    }
    fields
}

/// A space-delimited entry before its conditions' field names are resolved.
#[derive(Debug)]
enum RawEntry {
    Ellipsis,
    Field {
        /// `None` for an empty entry (an unnamed field).
        name: Option<String>,
        at: usize,
        condition: Option<Expr<RawFieldCondition>>,
    },
}

#[derive(Debug)]
struct RawFieldCondition {
    name: String,
    at: usize,
    comparison: Comparison,
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

// ---------------------------------------------------------------------------------------------
// Lexing and parsing

/// A position in the pattern text, in bytes.
#[derive(Debug)]
struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Cursor<'a> {
        Cursor { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        let src: &'a str = self.src;
        src.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, wanted: char) -> bool {
        let found = self.peek_char() == Some(wanted);
        if found {
            self.pos += wanted.len_utf8();
        }
        found
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    /// Reads a `"quoted string"` starting at the cursor, unescaping `\"` and `\\`.
    fn read_quoted(&mut self) -> Result<String, PatternError> {
        let open = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(open, UNBALANCED_QUOTE)),
                Some('"') => return Ok(text),
                Some('\\') => match self.peek_char() {
                    Some(escaped @ ('"' | '\\')) => {
                        self.pos += 1;
                        text.push(escaped);
                    }
                    _ => text.push('\\'),
                },
                Some(c) => text.push(c),
            }
        }
    }

    /// An error at byte offset `at`, reported as a character position.
    fn error(&self, at: usize, message: impl Into<String>) -> PatternError {
        let position = self
            .src
            .get(..at)
            .map_or(0, |before| before.chars().count());
        PatternError {
            position,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    And,
    Or,
    Cmp(CmpOp),
    Quoted(String),
    /// An unquoted run of letters, digits and `_ - . * + : /`: a field name, keyword, number,
    /// `...` or unquoted string.
    Word(String),
    Selector(Vec<Step>),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offset where it starts.
    at: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '*' | '+' | ':' | '/')
}

fn is_property_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Recursive-descent parser for JSON and space-delimited patterns.
#[derive(Debug)]
struct Parser<'a> {
    cursor: Cursor<'a>,
    peeked: Option<Token>,
}

type Checkpoint = (usize, Option<Token>);

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        Parser {
            cursor: Cursor::new(src),
            peeked: None,
        }
    }

    fn error(&self, at: usize, message: impl Into<String>) -> PatternError {
        self.cursor.error(at, message)
    }

    fn peek(&mut self) -> Result<&Token, PatternError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lex()?,
        };
        let token: &Token = self.peeked.insert(token);
        Ok(token)
    }

    fn advance(&mut self) -> Result<Token, PatternError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lex(),
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        (self.cursor.pos, self.peeked.clone())
    }

    fn restore(&mut self, (pos, peeked): Checkpoint) {
        self.cursor.pos = pos;
        self.peeked = peeked;
    }

    fn lex(&mut self) -> Result<Token, PatternError> {
        self.cursor.skip_whitespace();
        let at = self.cursor.pos;
        let Some(c) = self.cursor.peek_char() else {
            return Ok(Token { tok: Tok::End, at });
        };
        let tok = match c {
            '{' | '}' | '(' | ')' | '[' | ']' | ',' => {
                self.cursor.bump();
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    _ => Tok::Comma,
                }
            }
            '&' | '|' => {
                self.cursor.bump();
                if !self.cursor.eat(c) {
                    return Err(self.error(at, format!("expected '{c}{c}'")));
                }
                if c == '&' {
                    Tok::And
                } else {
                    Tok::Or
                }
            }
            '=' => {
                self.cursor.bump();
                if self.cursor.peek_char() == Some('=') {
                    return Err(self.error(at, "unknown operator '=='; use '='"));
                }
                Tok::Cmp(CmpOp::Eq)
            }
            '!' => {
                self.cursor.bump();
                if !self.cursor.eat('=') {
                    return Err(self.error(at, "expected '!='"));
                }
                Tok::Cmp(CmpOp::Ne)
            }
            '<' | '>' => {
                self.cursor.bump();
                let or_equal = self.cursor.eat('=');
                Tok::Cmp(match (c, or_equal) {
                    ('<', false) => CmpOp::Lt,
                    ('<', true) => CmpOp::Le,
                    (_, false) => CmpOp::Gt,
                    (_, true) => CmpOp::Ge,
                })
            }
            '"' => Tok::Quoted(self.cursor.read_quoted()?),
            '$' => Tok::Selector(self.lex_selector()?),
            '%' => return Err(self.error(at, REGEX_UNSUPPORTED)),
            c if is_word_char(c) => Tok::Word(self.cursor.take_while(is_word_char).to_owned()),
            other => {
                return Err(self.error(
                    at,
                    format!("unexpected character '{other}'; enclose values that contain it in double quotes"),
                ))
            }
        };
        Ok(Token { tok, at })
    }

    /// `$` followed by `.property` and `[index]` steps.
    fn lex_selector(&mut self) -> Result<Vec<Step>, PatternError> {
        let dollar = self.cursor.pos;
        self.cursor.bump();
        let mut steps = Vec::new();
        loop {
            if self.cursor.eat('.') {
                let at = self.cursor.pos;
                let name = self.cursor.take_while(is_property_char);
                if name.is_empty() {
                    return Err(self.error(at, "expected a property name after '.'"));
                }
                steps.push(Step::Key(name.to_owned()));
            } else if self.cursor.peek_char() == Some('[') {
                let at = self.cursor.pos;
                if steps.is_empty() {
                    return Err(self.error(
                        at,
                        "an array index must follow a property, as in $.items[0]",
                    ));
                }
                self.cursor.bump();
                let digits = self.cursor.take_while(|c| c.is_ascii_digit());
                let index = digits
                    .parse::<usize>()
                    .map_err(|_| self.error(at, "expected an array index such as [0]"))?;
                if !self.cursor.eat(']') {
                    return Err(self.error(self.cursor.pos, "expected ']' after the array index"));
                }
                steps.push(Step::Index(index));
            } else {
                break;
            }
        }
        if steps.is_empty() {
            return Err(self.error(dollar, "expected a property after '$', as in $.field"));
        }
        Ok(steps)
    }

    fn expect_open(&mut self, wanted: Tok, name: &str) -> Result<usize, PatternError> {
        let Token { tok, at } = self.advance()?;
        if tok == wanted {
            Ok(at)
        } else {
            Err(self.error(at, format!("expected '{name}'")))
        }
    }

    fn expect_end(&mut self, after: &str) -> Result<(), PatternError> {
        let Token { tok, at } = self.advance()?;
        if tok == Tok::End {
            Ok(())
        } else {
            Err(self.error(at, format!("unexpected text after '{after}'")))
        }
    }

    // Expressions: `||` over `&&` over parenthesised expressions and conditions.

    fn parse_or<C>(
        &mut self,
        atom: fn(&mut Self) -> Result<C, PatternError>,
    ) -> Result<Expr<C>, PatternError> {
        let first = self.parse_and(atom)?;
        if self.peek()?.tok != Tok::Or {
            return Ok(first);
        }
        let mut branches = vec![first];
        while self.peek()?.tok == Tok::Or {
            self.advance()?;
            branches.push(self.parse_and(atom)?);
        }
        Ok(Expr::Or(branches))
    }

    fn parse_and<C>(
        &mut self,
        atom: fn(&mut Self) -> Result<C, PatternError>,
    ) -> Result<Expr<C>, PatternError> {
        let first = self.parse_primary(atom)?;
        if self.peek()?.tok != Tok::And {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek()?.tok == Tok::And {
            self.advance()?;
            operands.push(self.parse_primary(atom)?);
        }
        Ok(Expr::And(operands))
    }

    fn parse_primary<C>(
        &mut self,
        atom: fn(&mut Self) -> Result<C, PatternError>,
    ) -> Result<Expr<C>, PatternError> {
        if self.peek()?.tok != Tok::LParen {
            return atom(self).map(Expr::Cond);
        }
        let open = self.advance()?.at;
        let inner = self.parse_or(atom)?;
        let Token { tok, at } = self.advance()?;
        match tok {
            Tok::RParen => Ok(inner),
            Tok::End | Tok::RBrace | Tok::RBracket | Tok::Comma => {
                Err(self.error(open, "unbalanced '(': missing ')'"))
            }
            _ => Err(self.error(at, "expected '&&', '||' or ')'")),
        }
    }

    /// The value after a comparison operator.
    fn parse_comparison(&mut self, op: CmpOp) -> Result<Comparison, PatternError> {
        let Token { tok, at } = self.advance()?;
        let (text, quoted) = match tok {
            Tok::Quoted(text) => (text, true),
            Tok::Word(text) => (text, false),
            _ => return Err(self.error(at, format!("missing value after '{}'", op.symbol()))),
        };
        let number = if quoted { None } else { parse_number(&text) };
        if let Some(value) = number {
            return Ok(Comparison::Number { op, value });
        }
        match op {
            CmpOp::Eq | CmpOp::Ne => Ok(Comparison::Text {
                negated: op == CmpOp::Ne,
                matcher: TextMatch::new(&text),
            }),
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
                Err(self.error(at, format!("'{}' needs a numeric value", op.symbol())))
            }
        }
    }

    // JSON patterns.

    fn parse_json(&mut self) -> Result<Expr<JsonCondition>, PatternError> {
        let open = self.expect_open(Tok::LBrace, "{")?;
        let expr = self.parse_or(Self::parse_json_condition)?;
        let Token { tok, at } = self.advance()?;
        match tok {
            Tok::RBrace => {}
            Tok::End => return Err(self.error(open, "unbalanced '{': missing '}'")),
            Tok::RParen => return Err(self.error(at, "unbalanced ')'")),
            _ => return Err(self.error(at, "expected '&&', '||' or '}'")),
        }
        self.expect_end("}")?;
        Ok(expr)
    }

    fn parse_json_condition(&mut self) -> Result<JsonCondition, PatternError> {
        let Token { tok, at } = self.advance()?;
        let Tok::Selector(selector) = tok else {
            return Err(self.error(at, "expected a JSON selector such as $.field"));
        };
        let Token { tok, at } = self.advance()?;
        let test = match tok {
            Tok::Cmp(op) => JsonTest::Compare(self.parse_comparison(op)?),
            Tok::Word(word) if word == "IS" => {
                let Token { tok, at } = self.advance()?;
                match tok {
                    Tok::Word(word) if word == "TRUE" => JsonTest::IsTrue,
                    Tok::Word(word) if word == "FALSE" => JsonTest::IsFalse,
                    Tok::Word(word) if word == "NULL" => JsonTest::IsNull,
                    _ => return Err(self.error(at, "expected TRUE, FALSE or NULL after IS")),
                }
            }
            Tok::Word(word) if word == "NOT" => {
                let Token { tok, at } = self.advance()?;
                if !matches!(&tok, Tok::Word(word) if word == "EXISTS") {
                    return Err(self.error(at, "expected EXISTS after NOT"));
                }
                JsonTest::NotExists
            }
            _ => {
                return Err(self.error(
                    at,
                    "expected an operator: =, !=, <, <=, >, >=, IS TRUE, IS FALSE, IS NULL or NOT EXISTS",
                ))
            }
        };
        Ok(JsonCondition { selector, test })
    }

    // Space-delimited patterns.

    fn parse_delimited(&mut self) -> Result<Delimited, PatternError> {
        let open = self.expect_open(Tok::LBracket, "[")?;
        let first = self.peek()?.clone();
        if first.tok == Tok::RBracket {
            return Err(self.error(
                first.at,
                "a space-delimited pattern needs at least one field",
            ));
        }
        let mut raw = Vec::new();
        loop {
            raw.push(self.parse_entry(open)?);
            let Token { tok, at } = self.advance()?;
            match tok {
                Tok::Comma => {}
                Tok::RBracket => break,
                Tok::End => return Err(self.error(open, "unbalanced '[': missing ']'")),
                Tok::RParen => return Err(self.error(at, "unbalanced ')'")),
                _ => return Err(self.error(at, "expected ',', '&&', '||' or ']'")),
            }
        }
        self.expect_end("]")?;
        self.resolve_fields(raw)
    }

    /// One comma-separated entry: `...`, a bare field name, a condition, or nothing (an
    /// unnamed field).
    fn parse_entry(&mut self, open: usize) -> Result<RawEntry, PatternError> {
        let Token { tok, at } = self.peek()?.clone();
        match tok {
            Tok::Comma | Tok::RBracket => Ok(RawEntry::Field {
                name: None,
                at,
                condition: None,
            }),
            Tok::Word(word) if word == "..." => {
                self.advance()?;
                Ok(RawEntry::Ellipsis)
            }
            Tok::Word(name) => {
                let saved = self.checkpoint();
                self.advance()?;
                let follower = self.peek()?.tok.clone();
                if matches!(follower, Tok::Comma | Tok::RBracket | Tok::End) {
                    if !is_field_name(&name) {
                        return Err(self.error(at, format!("invalid field name '{name}'")));
                    }
                    return Ok(RawEntry::Field {
                        name: Some(name),
                        at,
                        condition: None,
                    });
                }
                self.restore(saved);
                self.parse_field_expression()
            }
            Tok::LParen => self.parse_field_expression(),
            Tok::End => Err(self.error(open, "unbalanced '[': missing ']'")),
            _ => Err(self.error(at, "expected a field name, a condition or '...'")),
        }
    }

    /// An entry with conditions; the field is named by its leftmost condition.
    fn parse_field_expression(&mut self) -> Result<RawEntry, PatternError> {
        let start = self.peek()?.at;
        let condition = self.parse_or(Self::parse_field_condition)?;
        let Some((name, at)) = condition
            .conditions()
            .first()
            .map(|c| (c.name.clone(), c.at))
        else {
            return Err(self.error(start, "expected a field condition"));
        };
        Ok(RawEntry::Field {
            name: Some(name),
            at,
            condition: Some(condition),
        })
    }

    fn parse_field_condition(&mut self) -> Result<RawFieldCondition, PatternError> {
        let Token { tok, at } = self.advance()?;
        let Tok::Word(name) = tok else {
            return Err(self.error(at, "expected a field name"));
        };
        if !is_field_name(&name) {
            return Err(self.error(at, format!("invalid field name '{name}'")));
        }
        let operator = self.advance()?;
        let Tok::Cmp(op) = operator.tok else {
            return Err(self.error(
                operator.at,
                format!("expected an operator (=, !=, <, <=, >, >=) after field '{name}'"),
            ));
        };
        let comparison = self.parse_comparison(op)?;
        Ok(RawFieldCondition {
            name,
            at,
            comparison,
        })
    }

    /// Checks field names are unique and turns the names conditions use into entry indexes.
    fn resolve_fields(&self, raw: Vec<RawEntry>) -> Result<Delimited, PatternError> {
        let names: Vec<Option<String>> = raw
            .iter()
            .map(|entry| match entry {
                RawEntry::Field { name, .. } => name.clone(),
                RawEntry::Ellipsis => None,
            })
            .collect();
        for (index, entry) in raw.iter().enumerate() {
            if let RawEntry::Field {
                name: Some(name),
                at,
                ..
            } = entry
            {
                if names
                    .iter()
                    .take(index)
                    .any(|earlier| earlier.as_deref() == Some(name.as_str()))
                {
                    return Err(self.error(*at, format!("duplicate field name '{name}'")));
                }
            }
        }
        let mut entries = Vec::with_capacity(raw.len());
        for (index, entry) in raw.into_iter().enumerate() {
            let RawEntry::Field {
                name, condition, ..
            } = entry
            else {
                entries.push(Entry::Ellipsis);
                continue;
            };
            let condition = match condition {
                None => None,
                Some(condition) => Some(condition.try_map(
                    &mut |c: RawFieldCondition| -> Result<FieldCondition, PatternError> {
                        let entry = names
                            .iter()
                            .position(|name| name.as_deref() == Some(c.name.as_str()))
                            .ok_or_else(|| {
                                self.error(c.at, format!("unknown field '{}'", c.name))
                            })?;
                        Ok(FieldCondition {
                            entry,
                            comparison: c.comparison,
                        })
                    },
                )?),
            };
            let local = condition
                .as_ref()
                .is_none_or(|condition| condition.conditions().iter().all(|c| c.entry == index));
            entries.push(Entry::Field(Field {
                name,
                condition,
                local,
            }));
        }
        Ok(Delimited::new(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const APACHE_200: &str =
        r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 200 1534"#;
    const APACHE_404: &str =
        r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
    const APACHE_500: &str =
        r#"127.0.0.1 - frank [10/Oct/2000:13:35:22 -0700] "GET /apache_pb.gif HTTP/1.0" 500 5324"#;
    /// The docs' example event for JSON selectors.
    const DOC_EVENT: &str = r#"{"eventType":"UpdateTrail","sourceIPAddress":"111.111.111.111","arrayKey":["value","another value"],"objectList":[{"name":"a","id":1},{"name":"b","id":2}],"SomeObject":null,"ThisFlag":true}"#;
    /// The docs' example event for compound JSON conditions.
    const DOC_USERS: &str = r#"{"user":{"id":1,"email":"John.Stiles@example.com"},"users":[{"id":2,"email":"John.Doe@example.com"},{"id":3,"email":"Jane.Doe@example.com"}],"actions":["GET","PUT","DELETE"],"coordinates":[[0,1,2],[4,5,6],[7,8,9]]}"#;

    /// (pattern, message, expected match)
    const CASES: &[(&str, &str, bool)] = &[
        // Terms.
        ("", "anything at all", true),
        ("   ", "anything at all", true),
        ("", "", true),
        ("ERROR", "[ERROR] A fatal exception has occurred", true),
        ("ERROR", "Exiting with ERRORCODE: -1", true),
        ("ERROR", "error in lower case", false),
        ("ERROR", "", false),
        ("ERROR Exception", "[ERROR] Caught IllegalArgumentException", true),
        ("ERROR Exception", "[ERROR] Unhandled failure", false),
        ("Failed to process", "process to Failed", true),
        (r#""Failed to process""#, "[WARN] Failed to process the request", true),
        (r#""Failed to process""#, "process to Failed", false),
        (r#""Failed to process""#, "Failed  to process", false),
        ("ERROR -WARN", "ERROR message", true),
        ("ERROR -WARN", "ERROR WARN message", false),
        (r#""ERROR" - "Exiting""#, "Exiting with ERRORCODE: -1", false),
        (r#""ERROR" - "Exiting""#, "[ERROR] A fatal exception has occurred", true),
        (r#"ERROR -"WARN message""#, "ERROR WARN message", false),
        (r#"ERROR -"WARN message""#, "ERROR WARN other message", true),
        ("-ERROR", "all good", true),
        ("-ERROR", "ERROR here", false),
        ("?ERROR ?WARN", "WARN message", true),
        ("?ERROR ?WARN", "ERROR WARN message", true),
        ("?ERROR ?WARN", "INFO message", false),
        ("?ERROR MainThread ?WARN Deadlock", "WARN Deadlock detected", true),
        ("?ERROR MainThread ?WARN Deadlock", "ERROR in worker", false),
        ("?ERROR -Retrying ?FATAL", "ERROR Retrying", false),
        ("?ERROR -Retrying ?FATAL", "FATAL Retrying", true),
        (r#""foo-bar""#, "x foo-bar y", true),
        (r#""a\"b""#, r#"say a"b"#, true),
        (r#""a\\b""#, r#"path a\b"#, true),
        (r#""""#, "anything", true),
        ("user_id 42", "user_id=42", true),
        ("日本", "ログ 日本語", true),
        // JSON.
        (r#"{ $.level = "error" }"#, r#"{"level":"error"}"#, true),
        (r#"{ $.level = "error" }"#, r#"{"level":"warn"}"#, false),
        (r#"{ $.level = "error" }"#, "level error, but not JSON", false),
        (r#"{ $.level = "error" }"#, r#"{"level":"error-ish"}"#, false),
        ("{$.foo = bar}", r#"{"foo":"bar"}"#, true),
        ("{ $.foo = bar || $.foo = baz }", r#"{"foo":"baz"}"#, true),
        ("{ $.foo = bar || $.foo = baz }", r#"{"foo":"qux"}"#, false),
        ("{ $.latency > 100 }", r#"{"latency":150}"#, true),
        ("{ $.latency > 100 }", r#"{"latency":100}"#, false),
        ("{ $.latency >= 100 }", r#"{"latency":100}"#, true),
        ("{ $.latency < 10e3 }", r#"{"latency":9999.5}"#, true),
        ("{ $.latency > +1000 }", r#"{"latency":1001}"#, true),
        ("{ $.latency <= -0.5 }", r#"{"latency":-1}"#, true),
        ("{ $.latency > 100 }", r#"{"latency":"150"}"#, false),
        ("{ $.user.id = 42 }", r#"{"user":{"id":42}}"#, true),
        ("{ $.user.id = 42 }", r#"{"user":{"id":42.0}}"#, true),
        ("{ $.user.id != 42 }", r#"{"user":{"id":41}}"#, true),
        ("{ $.user.id != 42 }", r#"{"user":{}}"#, false),
        (r#"{ $.code = "400" }"#, r#"{"code":400}"#, true),
        ("{ $.ok = true }", r#"{"ok":true}"#, true),
        (r#"{ $.items[0] = "a" }"#, r#"{"items":["a","b"]}"#, true),
        (r#"{ $.items[1] = "a" }"#, r#"{"items":["a","b"]}"#, false),
        (r#"{ $.items[5] = "a" }"#, r#"{"items":["a","b"]}"#, false),
        ("{ $.ok IS TRUE }", r#"{"ok":true}"#, true),
        ("{ $.ok IS TRUE }", r#"{"ok":"true"}"#, false),
        ("{ $.ok IS FALSE }", r#"{"ok":false}"#, true),
        ("{ $.ok IS FALSE }", "{}", false),
        ("{ $.x IS NULL }", r#"{"x":null}"#, true),
        ("{ $.x IS NULL }", "{}", false),
        ("{ $.x NOT EXISTS }", "{}", true),
        ("{ $.x NOT EXISTS }", r#"{"x":null}"#, false),
        ("{ $.x NOT EXISTS }", "not JSON", false),
        (r#"{ $.msg = "err*" }"#, r#"{"msg":"error happened"}"#, true),
        (r#"{ $.msg = "err*" }"#, r#"{"msg":"an error"}"#, false),
        (r#"{ $.msg = "*Event" }"#, r#"{"msg":"PutEvent"}"#, true),
        (r#"{ $.msg = "*rror*" }"#, r#"{"msg":"an error here"}"#, true),
        (r#"{ $.msg = "Ev*ent" }"#, r#"{"msg":"Ev*ent"}"#, true),
        (r#"{ $.msg = "Ev*ent" }"#, r#"{"msg":"Event"}"#, false),
        (r#"{ $.msg != "err*" }"#, r#"{"msg":"ok"}"#, true),
        (r#"{ $.msg != "err*" }"#, r#"{"other":"ok"}"#, false),
        (r#"{ $.msg = "say \"hi\"" }"#, r#"{"msg":"say \"hi\""}"#, true),
        ("{ $.latency = * }", r#"{"latency":5}"#, true),
        ("{ $.latency = * }", "{}", false),
        ("{ $.a = 1 && $.b = 2 }", r#"{"a":1,"b":2}"#, true),
        ("{ $.a = 1 && $.b = 2 }", r#"{"a":1,"b":3}"#, false),
        ("{ $.a = 1 || $.b = 2 }", r#"{"a":0,"b":2}"#, true),
        ("{ $.a = 1 || $.b = 2 }", r#"{"a":0,"b":0}"#, false),
        ("{ $.a = 1 || $.b = 2 && $.c = 3 }", r#"{"a":1,"b":0,"c":0}"#, true),
        ("{ ($.a = 1 || $.b = 2) && $.c = 3 }", r#"{"a":1,"b":0,"c":0}"#, false),
        (r#"{ $.eventType = "UpdateTrail" }"#, DOC_EVENT, true),
        ("{ $.sourceIPAddress != 123.123.* }", DOC_EVENT, true),
        ("{ $.sourceIPAddress = 111.111.* }", DOC_EVENT, true),
        (r#"{ $.arrayKey[0] = "value" }"#, DOC_EVENT, true),
        ("{ $.objectList[1].id = 2 }", DOC_EVENT, true),
        ("{ $.SomeObject IS NULL }", DOC_EVENT, true),
        ("{ $.SomeOtherObject NOT EXISTS }", DOC_EVENT, true),
        ("{ $.ThisFlag IS TRUE }", DOC_EVENT, true),
        ("{ $.eventType IS NULL }", DOC_EVENT, false),
        (r#"{ $.arrayKey = "value" }"#, DOC_EVENT, false),
        (r#"{ $.arrayKey != "value" }"#, DOC_EVENT, false),
        (r#"{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }"#, DOC_USERS, true),
        (r#"{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }"#, DOC_USERS, false),
        (r#"{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch && $.actions[2] = nomatch }"#, DOC_USERS, true),
        (r#"{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch) && $.actions[2] = nomatch }"#, DOC_USERS, false),
        ("{ $.coordinates[2][0] = 7 }", DOC_USERS, true),
        // Space-delimited.
        ("[ip, user, username, timestamp, request, status_code, bytes]", APACHE_200, true),
        ("[ip, user, username, timestamp, request, status_code, bytes]", "too few fields", false),
        ("[ip, user, username, timestamp, request, status_code = 4*, bytes > 1000]", APACHE_404, true),
        ("[ip, user, username, timestamp, request, status_code = 4*, bytes > 1000]", APACHE_200, false),
        ("[ip, user, username, timestamp, request, status_code = 200, bytes]", APACHE_200, true),
        ("[ip, user, username, timestamp, request, status_code != 200, bytes]", APACHE_200, false),
        ("[ip, user, username, timestamp, request = *html*, status_code = 4*, bytes]", APACHE_404, true),
        ("[ip, user, username, timestamp, request = *html*, status_code = 4*, bytes]", APACHE_200, false),
        (r#"[ip, user, username, timestamp, request = "GET /index.html*", status_code, bytes]"#, APACHE_404, true),
        (r#"[ip, user, username, timestamp = "10/Oct/2000*", ...]"#, APACHE_200, true),
        ("[..., request=*.html*, status_code=4*,]", APACHE_404, true),
        ("[..., status_code = 500, bytes]", APACHE_500, true),
        ("[..., status_code = 500, bytes]", APACHE_200, false),
        ("[..., status = 500, ...]", APACHE_500, true),
        ("[..., status = 500, ...]", APACHE_200, false),
        ("[ip, user, ...]", APACHE_200, true),
        ("[ip, user, ..., status_code, bytes > 5000]", APACHE_500, true),
        ("[ip, user, ..., status_code, bytes > 5000]", APACHE_200, false),
        ("[ip, user, username, timestamp, request, status_code = 4* || status_code = 5*, bytes]", APACHE_500, true),
        ("[ip, user, username, timestamp, request, status_code = 4* || status_code = 5*, bytes]", APACHE_200, false),
        ("[ip, user, username, timestamp, request, status_code = 4* && status_code != 403, bytes]", APACHE_404, true),
        ("[w1=ERROR, w2]", "ERROR message", true),
        ("[w1=ERROR, w2]", "ERROR WARN message", false),
        ("[w1=ERROR || w1=WARN, w2]", "WARN message", true),
        ("[w1=ERROR || w1=WARN, w2]", "INFO message", false),
        ("[w1!=ERROR&&w1!=WARN, w2]", "INFO message", true),
        ("[w1!=ERROR&&w1!=WARN, w2]", "WARN message", false),
        ("[a, b = 1 && a = x]", "x 1", true),
        ("[a, b = 1 && a = x]", "y 1", false),
        ("[a, , c = z]", "x y z", true),
        ("[level, msg]", "  ERROR \t  boom  \n", true),
        ("[...]", "", true),
        ("[one]", "", false),
    ];

    #[test]
    fn table_of_matches() {
        for (pattern, message, expected) in CASES {
            let parsed = Pattern::parse(pattern)
                .unwrap_or_else(|error| panic!("pattern {pattern:?} should parse: {error}"));
            assert_eq!(
                parsed.matches(message),
                *expected,
                "pattern {pattern:?} against message {message:?}"
            );
            if *expected {
                for literal in parsed.required_literals() {
                    assert!(
                        message.contains(&literal),
                        "pattern {pattern:?} requires {literal:?}, which matching message {message:?} lacks"
                    );
                }
            }
        }
    }

    /// (pattern, 0-based character position of the error)
    const ERRORS: &[(&str, usize)] = &[
        (r#""unterminated"#, 0),
        (r#"ERROR "abc"#, 6),
        ("foo-bar", 3),
        ("ERROR @x", 6),
        ("ERROR -", 6),
        ("ERROR ?", 6),
        ("%ERR%", 0),
        ("日本 foo-bar", 6),
        (r#""a"b"#, 3),
        ("ERROR }", 6),
        ("{ $.a = 1", 0),
        ("{ $.a = }", 8),
        ("{ $.a == 1 }", 6),
        ("{ $.a > abc }", 8),
        ("{ $.a }", 6),
        ("{ ($.a = 1 }", 2),
        ("{ $.a = 1 } x", 12),
        ("{ $.a IS MAYBE }", 9),
        ("{ $.a NOT THERE }", 10),
        (r#"{ $.a = "x }"#, 8),
        ("{ $[0] = 1 }", 3),
        ("{ $. = 1 }", 4),
        ("{ $.a[x] = 1 }", 5),
        ("{ $.a = 1 && }", 13),
        ("{ $.a = 1 & $.b = 2 }", 10),
        ("{ $.a = 1 ) }", 10),
        ("{ }", 2),
        ("{ $.a = x@y }", 9),
        ("[a, b", 0),
        ("[a, b = ]", 8),
        ("[a, c = 1 && zz = 2]", 13),
        ("[]", 1),
        ("[a, a]", 4),
        ("[a, b.c]", 4),
        ("[a = 1 b]", 7),
        ("[a] x", 4),
        ("[a, b < x]", 8),
        ("[a, b =! 1]", 7),
        ("[a, b (]", 6),
    ];

    #[test]
    fn bad_patterns_report_where() {
        for (pattern, position) in ERRORS {
            match Pattern::parse(pattern) {
                Ok(parsed) => {
                    panic!("pattern {pattern:?} should be rejected, parsed as {parsed:?}")
                }
                Err(error) => {
                    assert_eq!(
                        error.position, *position,
                        "pattern {pattern:?} gave: {error}"
                    );
                    assert!(
                        !error.message.is_empty(),
                        "pattern {pattern:?} gave an empty message"
                    );
                }
            }
        }
    }

    #[test]
    fn error_display_names_position_and_problem() {
        let error = Pattern::parse(r#"ERROR "abc"#).expect_err("an unbalanced quote is an error");
        assert_eq!(
            error.to_string(),
            "Invalid filter pattern at position 6: unbalanced quote"
        );
        let error = Pattern::parse("foo-bar").expect_err("an unquoted '-' is an error");
        assert!(
            error
                .to_string()
                .contains("invalid character(s) in term 'foo-bar'"),
            "unexpected message: {error}"
        );
    }

    #[test]
    fn required_literals() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            (r#"ERROR "Failed to" -WARN"#, &["ERROR", "Failed to"]),
            ("?ERROR ?WARN", &[]),
            (r#"{ $.a = "x" }"#, &[]),
            (r#"[ip, ..., status = 4*, request = "GET*"]"#, &["4", "GET"]),
            ("[a = x || a = y]", &[]),
            ("[a != x, b > 5, c = *]", &[]),
            ("[a = x && b = *y*, b]", &["x", "y"]),
        ];
        for (pattern, expected) in cases {
            let parsed = Pattern::parse(pattern)
                .unwrap_or_else(|error| panic!("pattern {pattern:?} should parse: {error}"));
            assert_eq!(parsed.required_literals(), *expected, "pattern {pattern:?}");
        }
    }

    #[test]
    fn matches_everything() {
        for (pattern, expected) in [
            ("", true),
            ("  ", true),
            (r#""""#, true),
            ("[...]", true),
            ("ERROR", false),
            ("-ERROR", false),
            ("{ $.a = 1 }", false),
            ("[a]", false),
        ] {
            let parsed = Pattern::parse(pattern)
                .unwrap_or_else(|error| panic!("pattern {pattern:?} should parse: {error}"));
            assert_eq!(parsed.matches_everything(), expected, "pattern {pattern:?}");
        }
    }

    #[test]
    fn from_str_parses() {
        let parsed: Pattern = "ERROR".parse().expect("a single term parses");
        assert!(
            parsed.matches("an ERROR"),
            "pattern \"ERROR\" against message \"an ERROR\""
        );
    }

    fn extracted(pattern: &str, message: &str) -> Option<Vec<(String, String)>> {
        let parsed = Pattern::parse(pattern)
            .unwrap_or_else(|error| panic!("pattern {pattern:?} should parse: {error}"));
        parsed
            .extract(message)
            .map(|values| values.into_iter().collect())
    }

    fn pairs(expected: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            expected
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn extract_terms_yields_nothing() {
        assert_eq!(extracted("ERROR", "an ERROR here"), pairs(&[]));
        assert_eq!(extracted("", "anything"), pairs(&[]));
        assert_eq!(extracted("ERROR", "all good"), None);
    }

    #[test]
    fn extract_json_selectors() {
        let pattern = r#"{ $.level = "error" && $.latency > 100 }"#;
        let message = r#"{"level":"error","latency":150.5,"other":{"x":"y","n":7}}"#;
        assert_eq!(
            extracted(pattern, message),
            pairs(&[("$.latency", "150.5"), ("$.level", "error")])
        );
        assert_eq!(
            extracted(pattern, r#"{"level":"error","latency":50}"#),
            None
        );
        assert_eq!(extracted(pattern, "not JSON"), None);
        assert_eq!(
            extracted(
                "{ $.objectList[1].id = 2 && $.ThisFlag IS TRUE }",
                DOC_EVENT
            ),
            pairs(&[("$.ThisFlag", "true"), ("$.objectList[1].id", "2")])
        );
        assert_eq!(
            extracted(
                "{ $.SomeObject IS NULL && $.SomeOtherObject NOT EXISTS }",
                DOC_EVENT
            ),
            pairs(&[("$.SomeObject", "null")])
        );
        // The false side of `||` is left out; a selector on an array reaches no value node.
        assert_eq!(
            extracted(
                r#"{ $.a = 1 || $.b = 2 || $.arr = "x" }"#,
                r#"{"a":1,"arr":[1]}"#
            ),
            pairs(&[("$.a", "1")])
        );
        // A selector named twice is reported once.
        assert_eq!(
            extracted("{ $.a = 1 || $.a = 2 }", r#"{"a":2}"#),
            pairs(&[("$.a", "2")])
        );
    }

    #[test]
    fn select_json_paths() {
        let pattern = Pattern::parse(r#"{ $.level = "error" && $.latency > 100 }"#)
            .expect("the pattern parses");
        let message = r#"{"level":"error","latency":150,"other":{"x":"y","list":[1,2]}}"#;
        assert_eq!(pattern.select(message, "$.latency").as_deref(), Some("150"));
        assert_eq!(pattern.select(message, "$.other.x").as_deref(), Some("y"));
        assert_eq!(
            pattern.select(message, "$.other.list[1]").as_deref(),
            Some("2")
        );
        assert_eq!(pattern.select(message, "$.other"), None);
        assert_eq!(pattern.select(message, "$.missing"), None);
        assert_eq!(pattern.select(message, "$.latency extra"), None);
        assert_eq!(pattern.select(message, "latency"), None);
        assert_eq!(
            pattern.select(r#"{"level":"warn","latency":150}"#, "$.latency"),
            None
        );
    }

    #[test]
    fn extract_and_select_space_delimited_fields() {
        let pattern = "[ip, user, , status = 4*, bytes]";
        assert_eq!(
            extracted(pattern, "127.0.0.1 - frank 404 1534"),
            pairs(&[
                ("$3", "frank"),
                ("$bytes", "1534"),
                ("$ip", "127.0.0.1"),
                ("$status", "404"),
                ("$user", "-"),
            ])
        );
        assert_eq!(extracted(pattern, "127.0.0.1 - frank 200 1534"), None);
        assert_eq!(extracted(pattern, "127.0.0.1 - frank 404"), None);

        let parsed = Pattern::parse(pattern).expect("the pattern parses");
        let message = r#"127.0.0.1 - "frank n" 404 1534"#;
        assert_eq!(parsed.select(message, "$3").as_deref(), Some("frank n"));
        assert_eq!(parsed.select(message, "$bytes").as_deref(), Some("1534"));
        assert_eq!(parsed.select(message, "$2"), None);
        assert_eq!(parsed.select(message, "$nope"), None);
        assert_eq!(parsed.select("127.0.0.1 - frank 200 1534", "$bytes"), None);

        let pattern = "[..., status = 5*, bytes]";
        assert_eq!(
            extracted(pattern, APACHE_500),
            pairs(&[("$bytes", "5324"), ("$status", "500")])
        );
        assert_eq!(extracted(pattern, APACHE_200), None);
        assert_eq!(
            extracted("[ip, ..., , bytes]", APACHE_200),
            pairs(&[("$3", "200"), ("$bytes", "1534"), ("$ip", "127.0.0.1")])
        );
        assert_eq!(
            extracted("[..., request=*.html*, status_code=4*,]", APACHE_404),
            pairs(&[
                ("$4", "1534"),
                ("$request", "GET /index.html HTTP/1.0"),
                ("$status_code", "404"),
            ])
        );
    }

    #[test]
    fn check_selector_per_kind() {
        let terms = Pattern::parse("ERROR").expect("the pattern parses");
        let error = terms
            .check_selector("$.a")
            .expect_err("a terms pattern has no fields");
        assert_eq!(error.message, "a terms pattern has no fields to select");

        let json = Pattern::parse("{ $.a = 1 }").expect("the pattern parses");
        for selector in ["$.a", "$.other.x", "$.items[0].id", "$.m[1][2]"] {
            assert_eq!(
                json.check_selector(selector),
                Ok(()),
                "selector {selector:?}"
            );
        }
        for (selector, position) in [
            ("latency", 0),
            ("", 0),
            ("$", 0),
            ("$[0]", 1),
            ("$.a[x]", 3),
            ("$.a.", 4),
            ("$.a extra", 3),
            ("$.a[0", 5),
        ] {
            let error = json
                .check_selector(selector)
                .expect_err("the selector is invalid");
            assert_eq!(error.position, position, "selector {selector:?}: {error}");
            assert!(
                error
                    .message
                    .starts_with(&format!("invalid selector '{selector}'")),
                "selector {selector:?}: {error}"
            );
        }

        let delimited =
            Pattern::parse("[ip, user, , status = 4*, bytes, ...]").expect("the pattern parses");
        for selector in ["$ip", "$user", "$3", "$status", "$bytes"] {
            assert_eq!(
                delimited.check_selector(selector),
                Ok(()),
                "selector {selector:?}"
            );
        }
        for selector in ["$foo", "$1", "$03", "$6", "$7", "$0", "$", "ip", "$.ip", ""] {
            let error = delimited
                .check_selector(selector)
                .expect_err("the selector names no field");
            assert_eq!(
                error.message,
                format!(
                    "unknown field '{selector}': the pattern's fields are $ip, $user, $3, \
                     $status, $bytes"
                ),
                "selector {selector:?}"
            );
        }
        let error = Pattern::parse("[...]")
            .expect("the pattern parses")
            .check_selector("$1")
            .expect_err("`...` yields nothing");
        assert_eq!(
            error.message,
            "unknown field '$1': the pattern has no fields"
        );
    }

    /// Quotes a phrase the way the AWS CDK does.
    fn quote(phrase: &str) -> String {
        format!("\"{}\"", phrase.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        #[test]
        fn quoted_phrase_is_a_substring_search(
            phrase in r"[ !#-\[\]-~]{0,12}",
            prefix in "[ -~]{0,20}",
            suffix in "[ -~]{0,20}",
            embed in any::<bool>(),
        ) {
            let message = if embed { format!("{prefix}{phrase}{suffix}") } else { format!("{prefix}{suffix}") };
            let pattern = format!("\"{phrase}\"");
            let parsed = Pattern::parse(&pattern);
            prop_assert!(parsed.is_ok(), "pattern {:?} should parse: {:?}", pattern, parsed);
            let parsed = parsed.expect("checked just above");
            prop_assert_eq!(
                parsed.matches(&message),
                message.contains(&phrase),
                "pattern {:?} against message {:?}", pattern, message
            );
        }

        #[test]
        fn escaped_phrase_is_a_substring_search(
            phrase in "[ -~]{0,12}",
            prefix in "[ -~]{0,20}",
            suffix in "[ -~]{0,20}",
            embed in any::<bool>(),
        ) {
            let message = if embed { format!("{prefix}{phrase}{suffix}") } else { format!("{prefix}{suffix}") };
            let pattern = quote(&phrase);
            let parsed = Pattern::parse(&pattern);
            prop_assert!(parsed.is_ok(), "pattern {:?} should parse: {:?}", pattern, parsed);
            let parsed = parsed.expect("checked just above");
            prop_assert_eq!(
                parsed.matches(&message),
                message.contains(&phrase),
                "pattern {:?} against message {:?}", pattern, message
            );
        }
    }
}
