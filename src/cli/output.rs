//! The one place that writes to the terminal. Human messages go to stderr (as cargo does),
//! results to stdout; with `--json` stdout carries exactly one JSON document.

use anstream::{eprintln, println};
use anstyle::{AnsiColor, Style};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

const GOOD: Style = AnsiColor::Green.on_default().bold();
const WARN: Style = AnsiColor::Yellow.on_default().bold();
const BAD: Style = AnsiColor::Red.on_default().bold();
const DIM: Style = Style::new().dimmed();

impl Output {
    /// A progress step, cargo style: right-aligned coloured verb, then the message.
    pub fn status(&self, verb: &str, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{GOOD}{verb:>12}{GOOD:#} {}", msg.as_ref());
        }
    }

    /// A remark for the operator.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{DIM}note:{DIM:#} {}", msg.as_ref());
        }
    }

    /// Detail shown with `-v`.
    pub fn verbose(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{DIM}{}{DIM:#}", msg.as_ref());
        }
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("{WARN}warning:{WARN:#} {}", msg.as_ref());
    }

    /// An error; printed even with `--quiet`. `{:#}` of an anyhow error shows its context chain.
    pub fn error(&self, msg: impl AsRef<str>) {
        eprintln!("{BAD}error:{BAD:#} {}", msg.as_ref());
    }

    /// A plain line on stderr, for what an interactive prompt shows beside it.
    pub fn show(&self, msg: impl AsRef<str>) {
        eprintln!("{}", msg.as_ref());
    }

    /// Highlighted text (a value that differs), as `show` prints it.
    pub fn highlight(text: &str) -> String {
        format!("{WARN}{text}{WARN:#}")
    }

    /// A line of human-readable result on stdout (suppressed with `--json`).
    pub fn line(&self, msg: impl AsRef<str>) {
        if !self.json {
            println!("{}", msg.as_ref());
        }
    }

    /// Emit the machine-readable result when `--json` was given.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }

    /// A labelled check result: ok / warn / fail.
    pub fn check(&self, level: CheckLevel, name: &str, detail: &str) {
        if self.json || self.quiet {
            return;
        }
        let (style, word) = match level {
            CheckLevel::Ok => (GOOD, "ok"),
            CheckLevel::Warn => (WARN, "warn"),
            CheckLevel::Fail => (BAD, "fail"),
        };
        println!("{style}{word:>5}{style:#}  {name}: {detail}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckLevel {
    Ok,
    Warn,
    Fail,
}

/// Render rows as a left-aligned text table with a header.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let fmt_row = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = fmt_row(&mut headers.iter().copied());
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    for row in rows {
        out.push('\n');
        out.push_str(&fmt_row(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["name", "port"],
            &[
                vec!["a".into(), "5432".into()],
                vec!["longer".into(), "1".into()],
            ],
        );
        assert_eq!(t, "name    port\n------  ----\na       5432\nlonger  1");
    }
}
