//! A container's output read straight from Docker's `json-file` log on disk, where the agent
//! can read it: the engine then writes each line once and never has to read it back and
//! stream it over its API (which costs it as much CPU again). Records are
//! `{"log": "...\n", "stream": "stdout", "time": "RFC 3339 with nanoseconds"}`, one per line;
//! a line Docker cut into 16 KiB pieces is joined, taking its last piece's time, as over the
//! API. Rotated files (`PATH.1` … `PATH.N`, newest first) are read oldest first, and a
//! rotation while following is noticed by the log file's inode changing.

use crate::runtime::{OutputLine, RuntimeError};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait at the end of the file before looking again, and how often to ask
/// whether the container still runs.
const IDLE: Duration = Duration::from_millis(20);
const RUNNING_CHECK: Duration = Duration::from_millis(500);

#[derive(serde::Deserialize)]
struct Record {
    log: String,
    time: String,
}

/// Docker's log timestamp (RFC 3339 with nanoseconds) as nanoseconds since the epoch.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Joins Docker's pieces into lines and keeps those at or after the resume point.
struct Lines {
    /// Lines before this (the start of the resume point's second, as Docker's API `since`
    /// counts) are skipped.
    floor_ns: i64,
    partial: String,
}

impl Lines {
    fn new(since_ns: i64) -> Lines {
        Lines {
            floor_ns: since_ns - since_ns.rem_euclid(1_000_000_000),
            partial: String::new(),
        }
    }

    /// One json-file record; a whole line when it completes one.
    fn record(&mut self, raw: &[u8]) -> Option<OutputLine> {
        let r: Record = serde_json::from_slice(raw).ok()?;
        let time_ns = parse_time(&r.time)?;
        let done = r.log.ends_with('\n');
        self.partial
            .push_str(r.log.strip_suffix('\n').unwrap_or(&r.log));
        if !done {
            return None;
        }
        let mut text = std::mem::take(&mut self.partial);
        if text.ends_with('\r') {
            text.pop();
        }
        (time_ns >= self.floor_ns).then_some(OutputLine { time_ns, text })
    }
}

/// The rotated files of `path` that exist, oldest first, then `path` itself.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = (1..100)
        .map(|k| PathBuf::from(format!("{}.{k}", path.display())))
        .take_while(|p| p.exists())
        .collect();
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads `path`'s log from `since_ns` on, sending each line to `send` (which says `false` when
/// nobody listens any more). Without `follow` it ends at the end of the newest file; with it,
/// it waits for more until `running` says the container has stopped and the file is read to
/// its end (what Docker writes after that, the caller reads with another call).
pub fn read(
    path: &Path,
    since_ns: i64,
    follow: bool,
    running: &dyn Fn() -> bool,
    send: &mut dyn FnMut(Result<OutputLine, RuntimeError>) -> bool,
) {
    let mut lines = Lines::new(since_ns);
    let mut raw = Vec::with_capacity(64 * 1024);
    // Opened all at once, so a rotation meanwhile cannot make us skip or repeat a file.
    let mut queue: Vec<(File, u64)> = files(path)
        .iter()
        .filter_map(|p| {
            let f = File::open(p).ok()?;
            let ino = f.metadata().ok()?.ino();
            Some((f, ino))
        })
        .collect();
    if queue.is_empty() {
        send(Err(RuntimeError::Api(format!(
            "cannot open the container's log file {}",
            path.display()
        ))));
        return;
    }
    let mut last_check = Instant::now();
    let mut stopped = false;
    while !queue.is_empty() {
        let (file, ino) = queue.remove(0);
        let newest = queue.is_empty();
        let mut rotated = false;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        loop {
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) => {}
                Ok(_) if raw.last() == Some(&b'\n') => {
                    if let Some(line) = lines.record(&raw) {
                        if !send(Ok(line)) {
                            return;
                        }
                    }
                    raw.clear();
                    continue;
                }
                // Part of a record still being written: the rest comes with the next read.
                Ok(_) => continue,
                Err(e) => {
                    send(Err(RuntimeError::Api(format!(
                        "reading the container's log file {}: {e}",
                        path.display()
                    ))));
                    return;
                }
            }
            // At the end of this file.
            if !newest || !follow {
                raw.clear();
                break;
            }
            if !rotated && inode(path).is_some_and(|now| now != ino) {
                // Rotated: Docker may have written to this file just before renaming it, so
                // read it to its end once more before moving on.
                rotated = true;
                continue;
            }
            if rotated {
                // This file is complete; read the ones written after it.
                let newer = files(path);
                let at = newer.iter().position(|p| inode(p) == Some(ino));
                queue = newer
                    .iter()
                    .skip(at.map_or(newer.len() - 1, |i| i + 1))
                    .filter_map(|p| {
                        let f = File::open(p).ok()?;
                        let ino = f.metadata().ok()?.ino();
                        Some((f, ino))
                    })
                    .collect();
                raw.clear();
                break;
            }
            if stopped {
                return;
            }
            if last_check.elapsed() >= RUNNING_CHECK {
                last_check = Instant::now();
                // One more pass to the end of the file once it has stopped.
                stopped = !running();
                continue;
            }
            std::thread::sleep(IDLE);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec(text: &str, secs: i64, nanos: u32) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .replace_nanosecond(nanos)
            .unwrap();
        let time = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        format!(
            "{}\n",
            serde_json::json!({"log": text, "stream": "stdout", "time": time})
        )
    }

    fn collect(path: &Path, since_ns: i64) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        read(path, since_ns, false, &|| false, &mut |l| {
            let l = l.unwrap();
            out.push((l.time_ns, l.text));
            true
        });
        out
    }

    #[test]
    fn reads_rotated_files_oldest_first_joins_pieces_and_resumes_by_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(
            dir.path().join("c-json.log.2"),
            rec("one\n", 100, 5) + &rec("two\r\n", 100, 7),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c-json.log.1"),
            rec("thr", 101, 1) + &rec("ee\n", 101, 2),
        )
        .unwrap();
        let mut f = File::create(&path).unwrap();
        f.write_all(rec("four\n", 102, 0).as_bytes()).unwrap();
        // A record half written: not a line yet.
        f.write_all(br#"{"log":"fi"#).unwrap();
        let all = collect(&path, 0);
        assert_eq!(
            all,
            vec![
                (100_000_000_005, "one".to_string()),
                (100_000_000_007, "two".into()),
                (101_000_000_002, "three".into()),
                (102_000_000_000, "four".into()),
            ],
            "oldest file first, pieces joined with the last piece's time, \\r dropped"
        );
        let later = collect(&path, 101_000_000_001);
        assert_eq!(
            later.first().map(|l| l.1.as_str()),
            Some("three"),
            "from the start of the resume point's second, as Docker's API"
        );
    }

    #[test]
    fn following_sees_appends_and_a_rotation_and_ends_once_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, rec("a\n", 1, 0)).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(rec("b\n", 2, 0).as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                std::fs::rename(&path, format!("{}.1", path.display())).unwrap();
                std::fs::write(&path, rec("c\n", 3, 0)).unwrap();
            })
        };
        let stop_at = Instant::now() + Duration::from_millis(1200);
        let mut seen = Vec::new();
        read(&path, 0, true, &|| Instant::now() < stop_at, &mut |l| {
            seen.push(l.unwrap().text);
            true
        });
        writer.join().unwrap();
        assert_eq!(
            seen,
            ["a", "b", "c"],
            "every line once, across the rotation"
        );
    }
}
