//! ECS's cluster query language: the expressions of `memberOf` placement constraints and of
//! `ListContainerInstances --filter`.
//!
//! ```text
//! expr    := or
//! or      := and (("or" | "||") and)*
//! and     := not (("and" | "&&") not)*
//! not     := ("not" | "!") not | "(" expr ")" | compare
//! compare := subject op [value]
//! subject := attribute:NAME | agentConnected | agentVersion | ec2InstanceId | registeredAt
//!          | runningTasksCount | task:group
//! op      := == != > >= < <= exists !exists in !in =~ !~   (and their word forms)
//! value   := word | 'quoted' | "quoted" | [value, ...]
//! ```
//! [`parse`] turns a string into an [`Expr`] or an error that says where it went wrong;
//! [`Expr::matches`] evaluates it against anything that implements [`Subject`].

use std::fmt;

/// Expressions are at most this long, as in ECS.
pub const MAX_EXPRESSION_LEN: usize = 2000;

/// What an expression can ask of a container instance.
pub trait Subject {
    /// `None`: no such attribute; `Some(None)`: present without a value.
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    fn agent_connected(&self) -> bool;
    fn agent_version(&self) -> Option<&str>;
    fn ec2_instance_id(&self) -> &str;
    /// Seconds since the epoch.
    fn registered_at(&self) -> f64;
    fn running_tasks_count(&self) -> u64;
    /// Whether a task of `group` runs (or is pending) there.
    fn has_group(&self, group: &str) -> bool;
    fn has_any_group(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Attribute(String),
    AgentConnected,
    AgentVersion,
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone)]
pub enum Value {
    One(String),
    List(Vec<String>),
    Pattern(regex::Regex),
}

#[derive(Debug, Clone)]
pub enum Expr {
    Compare {
        field: Field,
        op: Op,
        value: Option<Value>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A syntax error, with the character position it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

impl std::error::Error for QueryError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = ["==", "!=", ">=", "<=", "=~", "!~", "&&", "||"]
            .into_iter()
            .find(|s| *s == two);
        if let Some(sym) = sym {
            out.push((start, Tok::Sym(sym)));
            i += 2;
            continue;
        }
        match c {
            '(' => out.push((start, Tok::LParen)),
            ')' => out.push((start, Tok::RParen)),
            '[' => out.push((start, Tok::LBracket)),
            ']' => out.push((start, Tok::RBracket)),
            ',' => out.push((start, Tok::Comma)),
            '>' => out.push((start, Tok::Sym(">"))),
            '<' => out.push((start, Tok::Sym("<"))),
            '!' => {
                // `!exists`, `!in` are operators; `!` alone is `not`.
                let rest: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if rest == "exists" || rest == "in" {
                    out.push((start, Tok::Word(format!("!{rest}"))));
                    i += 1 + rest.len();
                    continue;
                }
                out.push((start, Tok::Sym("!")));
            }
            '\'' | '"' => {
                let quote = c;
                let mut j = i + 1;
                let mut text = String::new();
                while j < chars.len() && chars[j] != quote {
                    text.push(chars[j]);
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(QueryError {
                        position: start,
                        message: format!("unterminated quoted value {quote}{text}"),
                    });
                }
                out.push((start, Tok::Quoted(text)));
                i = j + 1;
                continue;
            }
            _ => {
                let mut j = i;
                let mut text = String::new();
                while j < chars.len() {
                    let d = chars[j];
                    if d.is_whitespace() || "()[],'\"".contains(d) {
                        break;
                    }
                    // Stop before an operator that follows a word with no space.
                    let two: String = chars[j..(j + 2).min(chars.len())].iter().collect();
                    if !text.is_empty()
                        && (["==", "!=", ">=", "<=", "=~", "!~", "&&", "||"]
                            .contains(&two.as_str())
                            || d == '>'
                            || d == '<')
                    {
                        break;
                    }
                    text.push(d);
                    j += 1;
                }
                if text.is_empty() {
                    return Err(QueryError {
                        position: start,
                        message: format!("unexpected character '{c}'"),
                    });
                }
                out.push((start, Tok::Word(text)));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(p, _)| *p).unwrap_or(self.len)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, QueryError> {
        Err(QueryError {
            position: self.at(),
            message: message.into(),
        })
    }

    fn is_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if words.iter().any(|x| w.eq_ignore_ascii_case(x)))
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.is_word(&["or"]) || self.peek() == Some(&Tok::Sym("||")) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.not()?;
        while self.is_word(&["and"]) || self.peek() == Some(&Tok::Sym("&&")) {
            self.pos += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if self.is_word(&["not"]) || self.peek() == Some(&Tok::Sym("!")) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected ')'");
            }
            self.pos += 1;
            return Ok(e);
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, QueryError> {
        let field = match self.peek() {
            Some(Tok::Word(w)) => {
                let f = match w.as_str() {
                    "agentConnected" => Field::AgentConnected,
                    "agentVersion" => Field::AgentVersion,
                    "ec2InstanceId" => Field::Ec2InstanceId,
                    "registeredAt" => Field::RegisteredAt,
                    "runningTasksCount" => Field::RunningTasksCount,
                    "task:group" => Field::TaskGroup,
                    w if w.starts_with("attribute:") && w.len() > "attribute:".len() => {
                        Field::Attribute(w["attribute:".len()..].to_string())
                    }
                    other => {
                        return self.err(format!(
                            "unknown subject '{other}' (expected attribute:NAME, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount or task:group)"
                        ))
                    }
                };
                self.pos += 1;
                f
            }
            Some(t) => return self.err(format!("expected a subject, found {}", show(t))),
            None => return self.err("expected a subject, found the end"),
        };
        let op = match self.peek() {
            Some(Tok::Sym(s)) => match *s {
                "==" => Op::Eq,
                "!=" => Op::Ne,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "<" => Op::Lt,
                "<=" => Op::Le,
                "=~" => Op::Matches,
                "!~" => Op::NotMatches,
                other => return self.err(format!("expected an operator, found '{other}'")),
            },
            Some(Tok::Word(w)) => match w.as_str() {
                "equals" => Op::Eq,
                "not_equals" => Op::Ne,
                "greater_than" => Op::Gt,
                "greater_than_equal" => Op::Ge,
                "less_than" => Op::Lt,
                "less_than_equal" => Op::Le,
                "exists" => Op::Exists,
                "!exists" | "not_exists" => Op::NotExists,
                "in" => Op::In,
                "!in" | "not_in" => Op::NotIn,
                "matches" => Op::Matches,
                "not_matches" => Op::NotMatches,
                other => return self.err(format!("expected an operator, found '{other}'")),
            },
            Some(t) => return self.err(format!("expected an operator, found {}", show(t))),
            None => return self.err("expected an operator, found the end"),
        };
        self.pos += 1;
        let value = match op {
            Op::Exists | Op::NotExists => None,
            Op::In | Op::NotIn => Some(Value::List(self.list()?)),
            Op::Matches | Op::NotMatches => {
                let at = self.at();
                let p = self.scalar()?;
                let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| QueryError {
                    position: at,
                    message: format!("'{p}' is not a valid pattern: {e}"),
                })?;
                Some(Value::Pattern(re))
            }
            _ => Some(Value::One(self.scalar()?)),
        };
        Ok(Expr::Compare { field, op, value })
    }

    fn scalar(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Word(w))
                if !["and", "or", "not"].contains(&w.to_ascii_lowercase().as_str()) =>
            {
                self.pos += 1;
                Ok(w)
            }
            Some(Tok::Quoted(q)) => {
                self.pos += 1;
                Ok(q)
            }
            Some(t) => self.err(format!("expected a value, found {}", show(&t))),
            None => self.err("expected a value, found the end"),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, QueryError> {
        if self.peek() != Some(&Tok::LBracket) {
            // A single value is a one-element list.
            return Ok(vec![self.scalar()?]);
        }
        self.pos += 1;
        let mut out = vec![self.scalar()?];
        loop {
            match self.peek() {
                Some(Tok::Comma) => {
                    self.pos += 1;
                    out.push(self.scalar()?);
                }
                Some(Tok::RBracket) => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return self.err("expected ',' or ']' in a list"),
            }
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(q) => format!("'{q}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, QueryError> {
    if s.chars().count() > MAX_EXPRESSION_LEN {
        return Err(QueryError {
            position: MAX_EXPRESSION_LEN,
            message: format!(
                "the expression is {} characters; the limit is {MAX_EXPRESSION_LEN}",
                s.chars().count()
            ),
        });
    }
    let toks = tokenize(s)?;
    let len = s.chars().count();
    let mut p = Parser { toks, pos: 0, len };
    if p.peek().is_none() {
        return p.err("the expression is empty");
    }
    let e = p.or()?;
    if p.pos < p.toks.len() {
        let t = p.toks[p.pos].1.clone();
        return p.err(format!(
            "unexpected {} after a complete expression",
            show(&t)
        ));
    }
    Ok(e)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DD`, optionally `THH:MM[:SS[.fff]]` and `Z`, as seconds since the epoch (UTC).
pub fn parse_date(s: &str) -> Option<f64> {
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) as f64 * 86400.0;
    if let Some(t) = time {
        let mut parts = t.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let mi: f64 = parts.next().unwrap_or("0").parse().ok()?;
        let se: f64 = parts.next().unwrap_or("0").parse().ok()?;
        secs += h * 3600.0 + mi * 60.0 + se;
    }
    Some(secs)
}

/// Compares dotted versions component by component, numerically where both are numbers.
fn cmp_version(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.trim_start_matches('v')
            .split(['.', '-'])
            .map(str::to_string)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("0");
        let y = pb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

fn ordered(op: Op, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        _ => false,
    }
}

/// Numbers compare as numbers, anything else as text.
fn cmp_text(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

impl Expr {
    /// True when the answer cannot change as tasks are placed (no `task:group`, no
    /// `runningTasksCount`), so it may be computed once per instance and cached.
    pub fn is_static(&self) -> bool {
        match self {
            Expr::Compare { field, .. } => {
                !matches!(field, Field::TaskGroup | Field::RunningTasksCount)
            }
            Expr::Not(e) => e.is_static(),
            Expr::And(a, b) | Expr::Or(a, b) => a.is_static() && b.is_static(),
        }
    }

    pub fn matches(&self, s: &impl Subject) -> bool {
        match self {
            Expr::Not(e) => !e.matches(s),
            Expr::And(a, b) => a.matches(s) && b.matches(s),
            Expr::Or(a, b) => a.matches(s) || b.matches(s),
            Expr::Compare { field, op, value } => compare(field, *op, value.as_ref(), s),
        }
    }
}

fn compare(field: &Field, op: Op, value: Option<&Value>, s: &impl Subject) -> bool {
    // task:group asks about the set of groups on the instance.
    if *field == Field::TaskGroup {
        return match (op, value) {
            (Op::Exists, _) => s.has_any_group(),
            (Op::NotExists, _) => !s.has_any_group(),
            (Op::Eq, Some(Value::One(g))) => s.has_group(g),
            (Op::Ne, Some(Value::One(g))) => !s.has_group(g),
            (Op::In, Some(Value::List(gs))) => gs.iter().any(|g| s.has_group(g)),
            (Op::NotIn, Some(Value::List(gs))) => !gs.iter().any(|g| s.has_group(g)),
            _ => false,
        };
    }
    let text: Option<String> = match field {
        Field::Attribute(name) => s.attribute(name).map(|v| v.unwrap_or("").to_string()),
        Field::AgentConnected => Some(s.agent_connected().to_string()),
        Field::AgentVersion => s.agent_version().map(str::to_string),
        Field::Ec2InstanceId => Some(s.ec2_instance_id().to_string()),
        Field::RegisteredAt => Some(s.registered_at().to_string()),
        Field::RunningTasksCount => Some(s.running_tasks_count().to_string()),
        Field::TaskGroup => None,
    };
    let cmp = |a: &str, b: &str| -> std::cmp::Ordering {
        match field {
            Field::AgentVersion => cmp_version(a, b),
            Field::RegisteredAt => {
                let x: f64 = a.parse().unwrap_or(0.0);
                match parse_date(b).or_else(|| b.parse().ok()) {
                    Some(y) => x.total_cmp(&y),
                    None => std::cmp::Ordering::Less,
                }
            }
            _ => cmp_text(a, b),
        }
    };
    match (op, value, text) {
        (Op::Exists, _, t) => t.is_some(),
        (Op::NotExists, _, t) => t.is_none(),
        (Op::Ne, Some(Value::One(_)), None) => true,
        (Op::NotIn, Some(Value::List(_)), None) => true,
        (Op::NotMatches, Some(Value::Pattern(_)), None) => true,
        (_, _, None) => false,
        (Op::In, Some(Value::List(vs)), Some(t)) => vs.iter().any(|v| cmp(&t, v).is_eq()),
        (Op::NotIn, Some(Value::List(vs)), Some(t)) => !vs.iter().any(|v| cmp(&t, v).is_eq()),
        (Op::Matches, Some(Value::Pattern(re)), Some(t)) => re.is_match(&t),
        (Op::NotMatches, Some(Value::Pattern(re)), Some(t)) => !re.is_match(&t),
        (op, Some(Value::One(v)), Some(t)) => ordered(op, cmp(&t, v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Host {
        attrs: BTreeMap<String, Option<String>>,
        connected: bool,
        version: &'static str,
        id: &'static str,
        registered: f64,
        running: u64,
        groups: Vec<&'static str>,
    }

    impl Subject for Host {
        fn attribute(&self, name: &str) -> Option<Option<&str>> {
            self.attrs.get(name).map(|v| v.as_deref())
        }
        fn agent_connected(&self) -> bool {
            self.connected
        }
        fn agent_version(&self) -> Option<&str> {
            Some(self.version)
        }
        fn ec2_instance_id(&self) -> &str {
            self.id
        }
        fn registered_at(&self) -> f64 {
            self.registered
        }
        fn running_tasks_count(&self) -> u64 {
            self.running
        }
        fn has_group(&self, g: &str) -> bool {
            self.groups.contains(&g)
        }
        fn has_any_group(&self) -> bool {
            !self.groups.is_empty()
        }
    }

    fn host() -> Host {
        Host {
            attrs: [
                (
                    "ecs.instance-type".to_string(),
                    Some("t2.micro".to_string()),
                ),
                (
                    "ecs.availability-zone".to_string(),
                    Some("us-east-1a".to_string()),
                ),
                ("ecs.capability.container-health-check".to_string(), None),
                ("stack".to_string(), Some("prod".to_string())),
            ]
            .into(),
            connected: true,
            version: "1.9.0",
            id: "i-abcd1234",
            registered: parse_date("2018-06-01T12:00:00Z").unwrap(),
            running: 3,
            groups: vec!["service:web", "database"],
        }
    }

    /// One table: expression → does it match `host()`.
    #[test]
    fn the_language_evaluates_as_ecs_documents_it() {
        let h = host();
        let cases: &[(&str, bool)] = &[
            ("attribute:ecs.instance-type == t2.micro", true),
            ("attribute:ecs.instance-type equals t2.micro", true),
            ("attribute:ecs.instance-type != t2.micro", false),
            ("attribute:ecs.instance-type =~ t2.*", true),
            ("attribute:ecs.instance-type =~ g2.*", false),
            ("attribute:ecs.instance-type !~ g2.*", true),
            ("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]", true),
            ("attribute:ecs.availability-zone !in [us-east-1a, us-east-1b]", false),
            ("attribute:ecs.availability-zone not_in ['us-east-1c']", true),
            ("attribute:stack exists", true),
            ("attribute:nope exists", false),
            ("attribute:nope !exists", true),
            ("attribute:nope == x", false),
            ("attribute:nope != x", true),
            ("attribute:ecs.capability.container-health-check exists", true),
            ("agentConnected == true", true),
            ("agentConnected == false", false),
            ("agentVersion >= 1.8.10", true),
            ("agentVersion < 1.10.0", true),
            ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", true),
            ("registeredAt > 2018-01-01", true),
            ("registeredAt < 2018-06-01T11:59:59Z", false),
            ("runningTasksCount > 1", true),
            ("runningTasksCount <= 2", false),
            ("task:group == service:web", true),
            ("task:group == database", true),
            ("not(task:group == database)", false),
            ("!(task:group == cache)", true),
            ("task:group in [cache, database]", true),
            ("task:group exists", true),
            (
                "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone in [us-east-1a]",
                true,
            ),
            ("attribute:stack == dev or runningTasksCount > 2", true),
            ("attribute:stack == dev || (runningTasksCount > 2 && agentConnected == false)", false),
            ("not attribute:stack == dev and not task:group == cache", true),
            ("attribute:stack==prod&&runningTasksCount>2", true),
            ("attribute:stack == \"prod\"", true),
        ];
        for (expr, want) in cases {
            let e = parse(expr).unwrap_or_else(|e| panic!("'{expr}' did not parse: {e}"));
            assert_eq!(e.matches(&h), *want, "'{expr}'");
        }
    }

    #[test]
    fn syntax_errors_say_where() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty"),
            ("attribute:x ==", 14, "expected a value"),
            ("color == red", 0, "unknown subject 'color'"),
            ("attribute:x == a b", 17, "unexpected 'b'"),
            ("(attribute:x == a", 17, "expected ')'"),
            ("attribute:x in [a, b", 20, "expected ',' or ']'"),
            ("attribute:x ~~ a", 12, "expected an operator"),
            ("attribute:x =~ '('", 15, "not a valid pattern"),
            ("attribute:x == 'open", 15, "unterminated"),
        ];
        for (expr, pos, says) in cases {
            let e = parse(expr).expect_err(expr);
            assert_eq!(e.position, *pos, "'{expr}': {e}");
            assert!(e.message.contains(says), "'{expr}': {e}");
        }
        let long = format!("attribute:x == {}", "a".repeat(2000));
        assert!(parse(&long).unwrap_err().message.contains("limit is 2000"));
    }

    #[test]
    fn dates_and_versions_compare_as_such() {
        assert_eq!(parse_date("1970-01-02"), Some(86400.0));
        assert_eq!(parse_date("2000-03-01T00:00:00Z"), Some(951868800.0));
        assert_eq!(parse_date("2000-13-01"), None);
        assert!(cmp_version("1.10.0", "1.9.9").is_gt());
        assert!(cmp_version("1.9", "1.9.0").is_eq());
    }
}
