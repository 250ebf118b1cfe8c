//! How the human CLI prints: tables sized to the terminal, JSON for scripts, tab-separated
//! text for `cut` and `awk`; and the small pure formatters every command shares (ages, ids,
//! sizes).

use serde::Serialize;
use std::io::IsTerminal;

/// The three shapes of output.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned columns with a header, for people.
    #[default]
    Table,
    /// The API's own objects, as the AWS CLI prints them.
    Json,
    /// Tab-separated columns without a header, for scripts.
    Text,
}

/// A table: a header and rows of cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns padded to their widest cell, no borders (the way `docker ps`
    /// and `kubectl get` print); on a terminal `width` wide, long cells are cut to fit, the
    /// widest first.
    pub fn render(&self, width: Option<u16>) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_content_arrangement(match width {
            Some(_) => comfy_table::ContentArrangement::Dynamic,
            None => comfy_table::ContentArrangement::Disabled,
        });
        if let Some(w) = width {
            t.set_width(w);
        }
        t.set_header(self.header.iter().copied());
        for row in &self.rows {
            t.add_row(row);
        }
        // comfy-table pads the first and last columns with a space; people read the columns
        // flush left, as `docker ps` prints them.
        for column in t.column_iter_mut() {
            column.set_padding((0, 2));
        }
        t.lines()
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The rows as tab-separated lines.
    pub fn text(&self) -> String {
        self.rows
            .iter()
            .map(|r| r.join("\t"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Prints `table` (table or text) or `json` (the API's objects) as `output` says.
pub fn emit<J: Serialize>(output: Output, json: &J, table: &Table) -> anyhow::Result<()> {
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(json)?),
        Output::Text => {
            if !table.rows.is_empty() {
                out!("{}", table.text());
            }
        }
        Output::Table => {
            let width = stdout_is_terminal().then(terminal_width).flatten();
            out!("{}", table.render(width));
        }
    }
    Ok(())
}

/// Prints a single object: JSON for `json` and `table` alike (an object has no columns), one
/// compact line for `text`.
pub fn emit_object<J: Serialize>(output: Output, json: &J) -> anyhow::Result<()> {
    match output {
        Output::Text => out!("{}", serde_json::to_string(json)?),
        Output::Json | Output::Table => out!("{}", serde_json::to_string_pretty(json)?),
    }
    Ok(())
}

fn terminal_width() -> Option<u16> {
    console::Term::stdout().size_checked().map(|(_, w)| w)
}

/// Writes one line to stdout; a closed pipe ends the process with success, as `ls | head`
/// does.
pub fn out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Whether people are reading stdout (colours and progress bars only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether people are reading stderr (where progress goes).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// How long ago `then` was, at `now` (both epoch seconds), the way `docker ps` says it:
/// `42s`, `5m`, `3h`, `2d`; `-` for nothing.
pub fn age(now: f64, then: Option<f64>) -> String {
    let Some(then) = then else {
        return "-".to_string();
    };
    let secs = (now - then).max(0.0) as u64;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The last part of an ARN or path: a task's id, a service's name, `family:revision`.
pub fn short(arn: Option<&str>) -> String {
    match arn {
        Some(a) => a.rsplit('/').next().unwrap_or(a).to_string(),
        None => "-".to_string(),
    }
}

/// A byte count for people: `1.5 MB`.
pub fn bytes(n: Option<i64>) -> String {
    let Some(n) = n else {
        return "-".to_string();
    };
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// An optional cell: the value or `-`.
pub fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// Now, as epoch seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_docker_ps() {
        assert_eq!(age(1000.0, Some(1000.0)), "0s");
        assert_eq!(
            age(1000.0, Some(1001.0)),
            "0s",
            "a clock skew is not negative"
        );
        assert_eq!(age(1000.0, Some(900.0)), "100s");
        assert_eq!(age(10_000.0, Some(10_000.0 - 600.0)), "10m");
        assert_eq!(age(100_000.0, Some(100_000.0 - 3.0 * 3600.0)), "3h");
        assert_eq!(age(1e6, Some(1e6 - 5.0 * 86400.0)), "5d");
        assert_eq!(age(1.0, None), "-");
    }

    #[test]
    fn short_names_and_sizes() {
        assert_eq!(
            short(Some(
                "arn:aws:ecs:us-east-1:000000000000:task/default/abc123"
            )),
            "abc123"
        );
        assert_eq!(short(Some("web:3")), "web:3");
        assert_eq!(short(None), "-");
        assert_eq!(bytes(Some(999)), "999 B");
        assert_eq!(bytes(Some(1_500_000)), "1.5 MB");
        assert_eq!(bytes(None), "-");
    }

    #[test]
    fn tables_align_columns_and_fit_a_narrow_terminal() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["web".into(), "ACTIVE".into()]);
        t.row(vec!["a-much-longer-name".into(), "DRAINING".into()]);
        let wide = t.render(None);
        let lines: Vec<&str> = wide.lines().collect();
        assert_eq!(lines.len(), 3, "{wide}");
        let col = lines[0].find("STATUS").expect("header");
        assert_eq!(lines[1].find("ACTIVE"), Some(col), "{wide}");
        assert_eq!(lines[2].find("DRAINING"), Some(col), "{wide}");
        assert!(lines[0].starts_with("NAME"), "flush left: {wide}");
        let narrow = t.render(Some(20));
        assert!(
            narrow.lines().all(|l| l.chars().count() <= 20),
            "cut to 20 columns:\n{narrow}"
        );
        assert_eq!(t.text(), "web\tACTIVE\na-much-longer-name\tDRAINING");
    }
}
