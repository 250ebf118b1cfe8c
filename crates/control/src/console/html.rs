//! HTML for the console, pure: escaping, the page frame, tables, forms. Every page is small,
//! readable without colour (state is always written out), and usable on a phone (tables
//! scroll sideways inside their own box).

use std::fmt::Write;

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment made safe for a URL (names may hold `:` and `/`).
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What a page has besides its body.
#[derive(Debug, Default)]
pub struct Frame<'a> {
    pub title: &'a str,
    /// Links above the title: (text, href).
    pub crumbs: Vec<(String, String)>,
    /// Reload every so many seconds (a deployment or a task in progress).
    pub refresh: Option<u32>,
    /// An error to show at the top.
    pub error: Option<String>,
    /// Whether someone is logged in (the log-out button).
    pub csrf: Option<&'a str>,
}

/// The whole page.
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(s) = f.refresh {
        let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = write!(
        h,
        "<title>{} · Berth</title><link rel=\"stylesheet\" href=\"/console/style.css\">",
        esc(f.title)
    );
    h.push_str("<script src=\"/console/app.js\" defer></script></head><body>");
    h.push_str("<header><nav aria-label=\"Main\"><a href=\"/console/\">Berth</a> ");
    h.push_str(
        "<a href=\"/console/\">Clusters</a> <a href=\"/console/taskdefs\">Task definitions</a> ",
    );
    h.push_str("<a href=\"/console/repos\">Repositories</a>");
    if let Some(csrf) = f.csrf {
        let _ = write!(
            h,
            " <form method=\"post\" action=\"/console/logout\" class=\"inline\">{}<button type=\"submit\">Log out</button></form>",
            csrf_field(csrf)
        );
    }
    h.push_str("</nav></header><main>");
    if !f.crumbs.is_empty() {
        h.push_str("<nav aria-label=\"Breadcrumb\" class=\"crumbs\">");
        for (text, href) in &f.crumbs {
            let _ = write!(h, "<a href=\"{}\">{}</a> / ", esc(href), esc(text));
        }
        h.push_str("</nav>");
    }
    let _ = write!(h, "<h1>{}</h1>", esc(f.title));
    if let Some(e) = &f.error {
        let _ = write!(h, "<p class=\"error\" role=\"alert\">Error: {}</p>", esc(e));
    }
    if let Some(s) = f.refresh {
        let _ = write!(
            h,
            "<p class=\"live\">Live: this page reloads every {s} s.</p>"
        );
    }
    h.push_str(body);
    h.push_str("</main></body></html>\n");
    h
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A table: header cells and rows of cells already in HTML; a caption names it for screen
/// readers.
pub fn table(caption: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut h = String::from("<div class=\"scroll\"><table>");
    let _ = write!(h, "<caption>{}</caption><thead><tr>", esc(caption));
    for c in header {
        let _ = write!(h, "<th scope=\"col\">{}</th>", esc(c));
    }
    h.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            h,
            "<tr><td colspan=\"{}\">None.</td></tr>",
            header.len().max(1)
        );
    }
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let _ = write!(h, "<td>{c}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

/// A link.
pub fn a(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

/// A one-button form that posts to `action`.
pub fn button(action: &str, label: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\">{}</button></form>",
        esc(action),
        csrf_field(csrf),
        esc(label)
    )
}

/// A line chart of `points` (time, value) as inline SVG, with its figures in words beside it
/// (latest, lowest, highest) so it reads without sight or colour.
pub fn chart(label: &str, points: &[(f64, f64)]) -> String {
    let (w, h) = (320.0, 60.0);
    let Some(&(_, latest)) = points.last() else {
        return format!("<p>{}: no figures yet.</p>", esc(label));
    };
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span_t = (t1 - t0).max(1.0);
    let span_v = (hi - lo).max(1e-9);
    let coords: Vec<String> = points
        .iter()
        .map(|&(t, v)| {
            let x = (t - t0) / span_t * w;
            let y = if hi > lo {
                h - (v - lo) / span_v * h
            } else {
                h / 2.0
            };
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let words = format!(
        "{}: latest {latest:.1}, lowest {lo:.1}, highest {hi:.1} in {} minutes with figures",
        label,
        points.len()
    );
    format!(
        "<figure><svg role=\"img\" aria-label=\"{words}\" width=\"{w}\" height=\"{h}\" viewBox=\"-2 -2 {} {}\">\
<polyline fill=\"none\" stroke=\"#1b2a3a\" stroke-width=\"2\" points=\"{}\"/>\
<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"#1b2a3a\"/></svg>\
<figcaption>{words}</figcaption></figure>",
        w + 4.0,
        h + 4.0,
        coords.join(" "),
        // The latest point, marked: a single minute is a dot.
        coords.last().and_then(|c| c.split_once(',')).map_or("0", |c| c.0),
        coords.last().and_then(|c| c.split_once(',')).map_or("0", |c| c.1),
        words = esc(&words)
    )
}

/// The style sheet: dark text on white (contrast above 7:1), visible focus, tables that
/// scroll on narrow screens.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fff;line-height:1.4}
header{background:#1b2a3a;padding:.5rem 1rem}header a,header button{color:#fff;margin-right:1rem}
header button{background:#1b2a3a;border:1px solid #fff;padding:.2rem .6rem}
main{padding:1rem;max-width:80rem}a{color:#0645ad}
:focus{outline:3px solid #b35900;outline-offset:2px}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1.5rem;min-width:20rem}
caption{text-align:left;font-weight:bold;padding:.3rem 0}
th,td{border:1px solid #555;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#e8e8e8}.inline{display:inline}.error{border:2px solid #a00;padding:.5rem;color:#700}
.live{font-style:italic}label{display:block;margin:.5rem 0 .1rem;font-weight:bold}
input,select,textarea{font:inherit;padding:.3rem;max-width:100%;color:#111;background:#fff;border:1px solid #555}
fieldset{border:1px solid #555;margin:1rem 0}summary{cursor:pointer;font-weight:600;margin:.5rem 0}button{font:inherit;padding:.3rem .8rem;color:#111;background:#e8e8e8;border:1px solid #555}
pre{background:#f4f4f4;color:#111;padding:.5rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.crumbs{margin-bottom:.5rem}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_says_its_figures_in_words() {
        let c = chart("Running tasks", &[(0.0, 1.0), (60.0, 3.0), (120.0, 2.0)]);
        assert!(
            c.contains("latest 2.0, lowest 1.0, highest 3.0 in 3 minutes with figures"),
            "{c}"
        );
        assert!(
            c.contains("points=\"0.0,60.0 160.0,0.0 320.0,30.0\""),
            "{c}"
        );
        assert_eq!(chart("X", &[]), "<p>X: no figures yet.</p>");
        let flat = chart("Y", &[(0.0, 5.0), (60.0, 5.0)]);
        assert!(
            flat.contains("0.0,30.0 320.0,30.0"),
            "a flat line in the middle: {flat}"
        );
    }

    #[test]
    fn text_and_segments_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(seg("web:3"), "web%3A3");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        let p = page(
            &Frame {
                title: "<x>",
                error: Some("<script>".into()),
                ..Default::default()
            },
            "",
        );
        assert!(
            p.contains("<h1>&lt;x&gt;</h1>") && p.contains("Error: &lt;script&gt;"),
            "{p}"
        );
        assert!(p.starts_with("<!doctype html>\n<html lang=\"en\">"));
    }
}
