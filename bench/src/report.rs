//! Output: aligned text tables, JSON files, rounding.

use std::{fs, path::Path};

use anyhow::Context as _;
use serde::Serialize;

/// A plain text table: a header row, a rule, then rows; columns after the first
/// are right-aligned (they are numbers).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = width[i].saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&"-".repeat(width.iter().sum::<usize>() + 2 * (cols.saturating_sub(1))));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).context("serializing results")?;
    fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `--json PATH` of a subcommand: writes `value` there (if a path was given)
/// and says so on stdout.
pub fn save_json<T: Serialize>(path: Option<&Path>, value: &T) -> anyhow::Result<()> {
    if let Some(p) = path {
        write_json(p, value)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Rounds to `digits` decimals (for JSON that people read).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Thousands of requests per second with one decimal: `123.4k`.
pub fn krps(rps: f64) -> String {
    format!("{:.1}k", rps / 1_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["server", "rps"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "100".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "server  rps");
        assert_eq!(lines[2], "a         1");
        assert_eq!(lines[3], "longer  100");
    }
}
