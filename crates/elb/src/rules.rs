//! Listener rules as an Application Load Balancer evaluates them: which rule a request meets
//! ([`first_match`]), whether one condition holds ([`matches`]), ELB's `*`/`?` wildcards
//! ([`wildcard`]) and where a redirect action sends the client ([`redirect_location`]).
//!
//! Pure: the proxy extracts [`RequestFacts`] from a request, asks, and acts on the answer.

use std::net::IpAddr;

use percent_encoding::percent_decode_str;

use crate::config::{Condition, Rule};

/// What rule conditions look at in one request, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The method as sent (`GET`); compared exactly.
    pub method: &'a str,
    /// The `Host` header (or HTTP/2 `:authority`), possibly with a `:port`; `None` if absent.
    pub host: Option<&'a str>,
    /// The path, without the query string, as sent (not percent-decoded).
    pub path: &'a str,
    /// The raw query string, without the `?`; `None` if the URL has none.
    pub query: Option<&'a str>,
    /// Every header as `(name, value)`; a repeated header appears once per occurrence.
    pub headers: &'a [(&'a str, &'a str)],
    /// The client's address (the TCP peer).
    pub client: IpAddr,
}

/// The first rule whose conditions all match the request; a rule without conditions (the
/// default rule) always matches. `rules` must be in evaluation order.
pub fn first_match<'r>(rules: &'r [Rule], req: &RequestFacts<'_>) -> Option<&'r Rule> {
    rules.iter().find(|rule| {
        rule.conditions
            .iter()
            .all(|condition| matches(condition, req))
    })
}

/// Whether one condition holds for the request: true when any of its values matches.
pub fn matches(condition: &Condition, req: &RequestFacts<'_>) -> bool {
    match condition {
        Condition::PathPattern(patterns) => patterns
            .iter()
            .any(|pattern| wildcard(pattern, req.path, false)),
        Condition::HostHeader(patterns) => match req.host {
            Some(host) => {
                let host = host_without_port(host);
                patterns.iter().any(|pattern| wildcard(pattern, host, true))
            }
            None => false,
        },
        Condition::HttpHeader { name, values } => req
            .headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .any(|(_, value)| values.iter().any(|pattern| wildcard(pattern, value, true))),
        Condition::Method(methods) => methods.iter().any(|method| method.as_str() == req.method),
        Condition::QueryString(wanted) => match req.query {
            Some(query) => {
                let pairs = query_pairs(query);
                wanted.iter().any(|(key, value)| {
                    pairs.iter().any(|(k, v)| {
                        key.as_deref().is_none_or(|key| glob(key, k, true, true))
                            && glob(value, v, true, true)
                    })
                })
            }
            None => false,
        },
        Condition::SourceIp(nets) => {
            // An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`.
            let canonical = req.client.to_canonical();
            nets.iter()
                .any(|net| net.contains(&req.client) || net.contains(&canonical))
        }
    }
}

/// ELB's wildcard match of the whole `text`: `*` matches any run of characters (including
/// none), `?` exactly one; everything else literally, by `char`. Linear-space and
/// O(pattern × text) time at worst (no exponential backtracking).
pub fn wildcard(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    glob(pattern, text, case_insensitive, false)
}

/// One element of a parsed wildcard pattern.
#[derive(Debug, Clone, Copy)]
enum Token {
    /// `*`
    Any,
    /// `?`
    One,
    /// Anything else, or an escaped `*`/`?`.
    Lit(char),
}

/// Splits a pattern into tokens; with `escapes`, `\x` is the literal `x` (ELB's query-string
/// values escape `*` and `?` this way).
fn tokens(pattern: &str, escapes: bool) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' if escapes => Token::Lit(chars.next().unwrap_or('\\')),
            c => Token::Lit(c),
        });
    }
    out
}

/// The two-pointer glob: on a mismatch, go back to just after the last `*` and let it swallow
/// one more character.
fn glob(pattern: &str, text: &str, case_insensitive: bool, escapes: bool) -> bool {
    let pattern = tokens(pattern, escapes);
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // (pattern position after the last `*`, text position that `*` has swallowed up to)
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(Token::Any) => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(Token::One) => {
                p += 1;
                t += 1;
            }
            Some(Token::Lit(l)) if same_char(*l, c, case_insensitive) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((after_star, swallowed)) => {
                    star = Some((after_star, swallowed + 1));
                    p = after_star;
                    t = swallowed + 1;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|token| matches!(token, Token::Any)))
}

fn same_char(a: char, b: char, case_insensitive: bool) -> bool {
    a == b || (case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
}

/// The host without its port: `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`
/// (brackets kept, as in a URL). A bare IPv6 literal (`::1`) is returned whole.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The query's `key=value` pairs, percent-decoded with `+` as a space; a piece without `=`
/// is a key with an empty value, and empty pieces (`a=1&&b=2`) are skipped.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            (form_decode(key), form_decode(value))
        })
        .collect()
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The `Location` of ELB's redirect action. Each part may use `#{protocol}`, `#{host}`,
/// `#{port}`, `#{path}` and `#{query}`, which stand for the request's own: the listener's
/// protocol (lower case) and port, the host without its port, the path **without its leading
/// `/`** (as ELB documents, so the usual path `/#{path}` keeps it unchanged) and the raw
/// query. An empty `protocol`, `host`, `port` or `path` keeps the request's own (ELB's
/// defaults); an empty `query` drops the query. The scheme is lower case, the port is left
/// out when it is the scheme's default (80 for http, 443 for https), and `?query` is added
/// only when the query is not empty. Unknown `#{...}` are left as written.
#[allow(
    clippy::too_many_arguments,
    reason = "the redirect action's five parts, the request and its listener, kept flat"
)]
pub fn redirect_location(
    protocol: &str,
    host: &str,
    port: &str,
    path: &str,
    query: &str,
    req: &RequestFacts<'_>,
    listener_protocol: &str,
    listener_port: u16,
) -> String {
    let own_protocol = listener_protocol.to_ascii_lowercase();
    let own_port = listener_port.to_string();
    let vars = [
        ("protocol", own_protocol.as_str()),
        ("host", req.host.map(host_without_port).unwrap_or("")),
        ("port", own_port.as_str()),
        ("path", req.path.strip_prefix('/').unwrap_or(req.path)),
        ("query", req.query.unwrap_or("")),
    ];
    let scheme = expand(or_keep(protocol, "#{protocol}"), &vars).to_ascii_lowercase();
    let host = expand(or_keep(host, "#{host}"), &vars);
    let port = expand(or_keep(port, "#{port}"), &vars);
    let path = expand(or_keep(path, "/#{path}"), &vars);
    let query = expand(query, &vars);

    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => "",
    };
    let mut location = format!("{scheme}://{host}");
    if !port.is_empty() && port != default_port {
        location.push(':');
        location.push_str(&port);
    }
    if !path.starts_with('/') {
        location.push('/');
    }
    location.push_str(&path);
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query);
    }
    location
}

fn or_keep<'a>(part: &'a str, keep: &'a str) -> &'a str {
    if part.is_empty() {
        keep
    } else {
        part
    }
}

/// Replaces each `#{name}` found in `vars` in one pass (values are not expanded again).
fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after.find('}').and_then(|end| {
            let name = &after[..end];
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("#{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::Action;

    const NO_HEADERS: &[(&str, &str)] = &[];

    fn facts<'a>(headers: &'a [(&'a str, &'a str)]) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            host: Some("www.example.com"),
            path: "/",
            query: None,
            headers,
            client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        }
    }

    fn rule(arn: &str, conditions: Vec<Condition>) -> Rule {
        Rule {
            arn: arn.to_owned(),
            conditions,
            action: Action::FixedResponse {
                status: 200,
                content_type: None,
                body: None,
            },
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn net(cidr: &str) -> ipnet::IpNet {
        cidr.parse().expect("test CIDR parses")
    }

    fn query_condition(pairs: &[(Option<&str>, &str)]) -> Condition {
        Condition::QueryString(
            pairs
                .iter()
                .map(|(k, v)| (k.map(str::to_owned), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn wildcard_star_matches_any_run_including_none() {
        for (pattern, text) in [
            ("*", ""),
            ("*", "anything"),
            ("/img/*", "/img/"),
            ("/img/*", "/img/a/b.png"),
            ("*.png", "/a/b.png"),
            ("/a*b*c", "/abc"),
            ("/a*b*c", "/axxbyyc"),
            ("**", "x"),
        ] {
            assert!(
                wildcard(pattern, text, false),
                "{pattern:?} should match {text:?}"
            );
        }
        for (pattern, text) in [
            ("/img/*", "/im"),
            ("*.png", "/a/b.png.bak"),
            ("/a*b*c", "/acb"),
            ("", "x"),
        ] {
            assert!(
                !wildcard(pattern, text, false),
                "{pattern:?} should not match {text:?}"
            );
        }
        assert!(
            wildcard("", "", false),
            "empty pattern should match empty text"
        );
    }

    #[test]
    fn wildcard_question_mark_is_exactly_one_char() {
        assert!(wildcard("/v?/x", "/v1/x", false), "? should match one char");
        assert!(
            !wildcard("/v?/x", "/v/x", false),
            "? should not match zero chars"
        );
        assert!(
            !wildcard("/v?/x", "/v12/x", false),
            "? should not match two chars"
        );
        assert!(
            wildcard("/v?", "/vé", false),
            "? should match one multibyte char"
        );
        assert!(wildcard("?*", "a", false), "?* should match one char");
        assert!(!wildcard("?*", "", false), "?* should not match empty text");
    }

    #[test]
    fn wildcard_case_flag_decides_case_sensitivity() {
        assert!(
            !wildcard("/API/*", "/api/users", false),
            "case-sensitive match ignored case"
        );
        assert!(
            wildcard("/API/*", "/api/users", true),
            "case-insensitive match saw case"
        );
        assert!(
            wildcard("ÉTÉ", "été", true),
            "case-insensitive match should fold non-ASCII"
        );
    }

    #[test]
    fn wildcard_treats_star_and_question_in_text_literally() {
        assert!(
            wildcard("a*", "a*b?", false),
            "pattern star should swallow text star"
        );
        assert!(
            !wildcard("a?", "a", false),
            "text without char for ? should fail"
        );
        assert!(
            wildcard("a\\b", "a\\b", false),
            "backslash is literal in plain wildcards"
        );
    }

    #[test]
    fn wildcard_does_not_backtrack_exponentially() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "a*".repeat(30));
        assert!(
            !wildcard(&pattern, &text, false),
            "pathological pattern should not match"
        );
        let pattern = format!("{}a", "*a".repeat(30));
        assert!(
            wildcard(&pattern, &text, false),
            "pathological pattern should match"
        );
    }

    #[test]
    fn path_pattern_is_case_sensitive_against_the_path() {
        let condition = Condition::PathPattern(strings(&["/api/*", "/health"]));
        let mut req = facts(NO_HEADERS);
        req.path = "/api/users";
        assert!(matches(&condition, &req), "/api/* should match /api/users");
        req.path = "/API/users";
        assert!(
            !matches(&condition, &req),
            "path patterns must be case-sensitive"
        );
        req.path = "/health";
        req.query = Some("verbose=1");
        assert!(
            matches(&condition, &req),
            "query must not take part in path matching"
        );
        req.path = "/other";
        assert!(!matches(&condition, &req), "/other matched no pattern");
    }

    #[test]
    fn host_header_ignores_case_and_port() {
        let condition = Condition::HostHeader(strings(&["*.example.com"]));
        let mut req = facts(NO_HEADERS);
        for host in ["www.example.com", "WWW.Example.COM", "api.example.com:8080"] {
            req.host = Some(host);
            assert!(
                matches(&condition, &req),
                "host {host:?} should match *.example.com"
            );
        }
        for host in ["example.org", "www.example.com.evil", "example.com"] {
            req.host = Some(host);
            assert!(!matches(&condition, &req), "host {host:?} should not match");
        }
        req.host = None;
        assert!(
            !matches(&condition, &req),
            "a request without Host must not match"
        );
    }

    #[test]
    fn host_without_port_handles_ipv6_literals() {
        assert_eq!(
            host_without_port("example.com:80"),
            "example.com",
            "name:port"
        );
        assert_eq!(
            host_without_port("example.com"),
            "example.com",
            "name alone"
        );
        assert_eq!(
            host_without_port("[::1]:8080"),
            "[::1]",
            "bracketed IPv6 with port"
        );
        assert_eq!(
            host_without_port("[::1]"),
            "[::1]",
            "bracketed IPv6 without port"
        );
        assert_eq!(
            host_without_port("::1"),
            "::1",
            "bare IPv6 must not lose its last group"
        );
        assert_eq!(
            host_without_port("10.0.0.1:443"),
            "10.0.0.1",
            "IPv4 with port"
        );
        assert_eq!(
            host_without_port("a:b"),
            "a:b",
            "non-numeric suffix is not a port"
        );
    }

    #[test]
    fn http_header_matches_any_occurrence_case_insensitively() {
        let condition = Condition::HttpHeader {
            name: "User-Agent".to_owned(),
            values: strings(&["*Mobile*", "curl/?.*"]),
        };
        let headers = [
            ("accept", "*/*"),
            ("user-agent", "Desktop"),
            ("USER-AGENT", "x mobile y"),
        ];
        assert!(
            matches(&condition, &facts(&headers)),
            "second user-agent header should match *Mobile* ignoring name and value case"
        );
        let headers = [("user-agent", "curl/8.5.0")];
        assert!(
            matches(&condition, &facts(&headers)),
            "curl/?.* should match curl/8.5.0"
        );
        let headers = [("user-agent", "Desktop")];
        assert!(
            !matches(&condition, &facts(&headers)),
            "Desktop matched no value"
        );
        let headers = [("x-user-agent", "Mobile")];
        assert!(
            !matches(&condition, &facts(&headers)),
            "another header's name must not count"
        );
    }

    #[test]
    fn method_is_exact_and_case_sensitive() {
        let condition = Condition::Method(strings(&["GET", "HEAD"]));
        let mut req = facts(NO_HEADERS);
        assert!(matches(&condition, &req), "GET should match");
        req.method = "get";
        assert!(!matches(&condition, &req), "methods must be case-sensitive");
        req.method = "POST";
        assert!(!matches(&condition, &req), "POST is not listed");
    }

    #[test]
    fn query_string_matches_decoded_pairs() {
        let mut req = facts(NO_HEADERS);
        req.query = Some("Version=V2&name=John+Smith&city=S%C3%A3o%20Paulo&flag");

        type Pairs<'a> = &'a [(Option<&'a str>, &'a str)];
        let cases: &[(Pairs, bool, &str)] = &[
            (
                &[(Some("version"), "v*")],
                true,
                "key and value ignore case",
            ),
            (&[(Some("version"), "v3")], false, "value differs"),
            (&[(None, "v2")], true, "value without key matches any key"),
            (
                &[(Some("name"), "john smith")],
                true,
                "+ decodes to a space",
            ),
            (
                &[(Some("city"), "são paulo")],
                true,
                "percent-decoding then case folding",
            ),
            (&[(Some("flag"), "")], true, "bare key has an empty value"),
            (&[(Some("missing"), "*")], false, "absent key"),
            (
                &[(Some("missing"), "*"), (None, "John*")],
                true,
                "any listed pair may match",
            ),
        ];
        for (pairs, expected, why) in cases {
            assert_eq!(
                matches(&query_condition(pairs), &req),
                *expected,
                "query condition {pairs:?}: {why}"
            );
        }

        req.query = None;
        assert!(
            !matches(&query_condition(&[(None, "*")]), &req),
            "a request without a query must not match a query condition"
        );
    }

    #[test]
    fn query_string_values_escape_wildcards_with_backslash() {
        let mut req = facts(NO_HEADERS);
        req.query = Some("q=a%2A");
        assert!(
            matches(&query_condition(&[(Some("q"), "a\\*")]), &req),
            "escaped star should match a literal star"
        );
        req.query = Some("q=ab");
        assert!(
            !matches(&query_condition(&[(Some("q"), "a\\*")]), &req),
            "escaped star must not act as a wildcard"
        );
    }

    #[test]
    fn source_ip_checks_every_cidr_and_unmaps_ipv4() {
        let condition = Condition::SourceIp(vec![net("10.0.0.0/8"), net("2001:db8::/32")]);
        let mut req = facts(NO_HEADERS);
        assert!(matches(&condition, &req), "10.0.0.1 is in 10.0.0.0/8");
        req.client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
        assert!(!matches(&condition, &req), "192.168.1.1 is in no block");
        req.client = IpAddr::V6("2001:db8::5".parse().expect("test address parses"));
        assert!(matches(&condition, &req), "2001:db8::5 is in 2001:db8::/32");
        req.client = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert!(
            matches(&condition, &req),
            "::ffff:10.1.2.3 should match 10.0.0.0/8"
        );
        req.client = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!matches(&condition, &req), "::1 is in no block");
    }

    #[test]
    fn first_match_takes_the_first_rule_whose_conditions_all_hold() {
        let rules = vec![
            rule(
                "api-post",
                vec![
                    Condition::PathPattern(strings(&["/api/*"])),
                    Condition::Method(strings(&["POST"])),
                ],
            ),
            rule("api", vec![Condition::PathPattern(strings(&["/api/*"]))]),
            rule(
                "also-api",
                vec![Condition::PathPattern(strings(&["/api/x"]))],
            ),
            rule("default", vec![]),
        ];
        let mut req = facts(NO_HEADERS);
        req.path = "/api/x";
        let arn = |req: &RequestFacts<'_>| first_match(&rules, req).map(|r| r.arn.as_str());
        assert_eq!(
            arn(&req),
            Some("api"),
            "GET /api/x fails api-post's method, then api"
        );
        req.method = "POST";
        assert_eq!(
            arn(&req),
            Some("api-post"),
            "POST /api/x meets both conditions"
        );
        req.path = "/home";
        assert_eq!(
            arn(&req),
            Some("default"),
            "a rule without conditions always matches"
        );
        assert_eq!(
            first_match(&rules[..3], &req).map(|r| r.arn.as_str()),
            None,
            "no rule matches without a default"
        );
    }

    fn redirect(parts: [&str; 5], req: &RequestFacts<'_>, listener: (&str, u16)) -> String {
        let [protocol, host, port, path, query] = parts;
        redirect_location(
            protocol, host, port, path, query, req, listener.0, listener.1,
        )
    }

    #[test]
    fn redirect_http_to_https_keeps_host_path_and_query() {
        let mut req = facts(NO_HEADERS);
        req.host = Some("www.example.com:80");
        req.path = "/a/b";
        req.query = Some("x=1&y=2");
        let parts = ["HTTPS", "#{host}", "443", "/#{path}", "#{query}"];
        assert_eq!(
            redirect(parts, &req, ("HTTP", 80)),
            "https://www.example.com/a/b?x=1&y=2",
            "default https port omitted, host port stripped, path and query kept"
        );
    }

    #[test]
    fn redirect_defaults_keep_the_request_own_parts() {
        let mut req = facts(NO_HEADERS);
        req.host = Some("Example.com:8080");
        req.path = "/p";
        req.query = None;
        let parts = ["#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}"];
        assert_eq!(
            redirect(parts, &req, ("HTTP", 8080)),
            "http://Example.com:8080/p",
            "non-default port kept, protocol lowercased, no '?' for an empty query"
        );
        assert_eq!(
            redirect(["", "", "", "", ""], &req, ("HTTP", 8080)),
            "http://Example.com:8080/p",
            "empty parts keep the request's own (query dropped)"
        );
    }

    #[test]
    fn redirect_expands_placeholders_inside_parts() {
        let mut req = facts(NO_HEADERS);
        req.host = Some("example.com");
        req.path = "/old/page";
        req.query = Some("a=1");
        let parts = [
            "HTTPS",
            "new.#{host}",
            "#{port}",
            "/new/#{path}",
            "#{query}&from=#{host}",
        ];
        assert_eq!(
            redirect(parts, &req, ("HTTP", 80)),
            "https://new.example.com:80/new/old/page?a=1&from=example.com",
            "#{{port}} is the listener's port, kept because 80 is not https's default"
        );
        let parts = ["HTTP", "#{host}", "80", "/#{unknown}/#{path", ""];
        assert_eq!(
            redirect(parts, &req, ("HTTP", 80)),
            "http://example.com/#{unknown}/#{path",
            "unknown or unterminated placeholders stay as written"
        );
    }

    #[test]
    fn redirect_keeps_ipv6_host_brackets() {
        let mut req = facts(NO_HEADERS);
        req.host = Some("[::1]:8080");
        req.path = "/";
        let parts = ["#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}"];
        assert_eq!(
            redirect(parts, &req, ("HTTP", 8080)),
            "http://[::1]:8080/",
            "IPv6 host keeps its brackets and the root path stays '/'"
        );
    }

    #[test]
    fn expand_does_not_reexpand_values() {
        let vars = [("path", "#{host}"), ("host", "h")];
        assert_eq!(
            expand("/#{path}", &vars),
            "/#{host}",
            "a value's placeholder stays literal"
        );
    }
}
