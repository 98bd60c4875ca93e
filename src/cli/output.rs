//! How `berth` commands report: the `--json` switch every reporting command
//! flattens in ([`OutputArgs`]), JSON and aligned human tables on stdout,
//! and human units for sizes.
//!
//! Stdout carries results only; diagnostics go to stderr (see
//! [`super::CliError`]). A closed stdout (`berth … | head -1`) is not an
//! error worth a message: the reader has what it wanted.

use std::io::{self, Write};

use serde::Serialize;

use super::CliError;

/// The output switch of a reporting command.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArgs {
    /// Print the result as JSON (one document on stdout) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Writes `value` to stdout as pretty-printed JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failed("Cannot encode the result as JSON", e.to_string()))?;
    text.push('\n');
    write_stdout(&text)
}

/// Writes `text` (one or more whole lines) to stdout.
pub fn print_line(text: &str) -> Result<(), CliError> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    write_stdout(&line)
}

/// Rows of `label  value`, labels padded to one column.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Adds a row.
    pub fn row(mut self, label: impl Into<String>, value: impl Into<String>) -> Table {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.rows {
            let pad = width - label.chars().count();
            out.push_str(label);
            out.extend(std::iter::repeat_n(' ', pad + 2));
            out.push_str(value);
            out.push('\n');
        }
        out
    }

    /// Writes the table to stdout.
    pub fn print(&self) -> Result<(), CliError> {
        write_stdout(&self.render())
    }
}

/// Rows under a header, every column padded to its widest cell (the last
/// column is not padded, so lines carry no trailing spaces).
#[derive(Debug)]
pub struct Columns {
    rows: Vec<Vec<String>>,
}

impl Columns {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Columns {
        Columns {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (cells beyond the header's count are kept as well).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, header first, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(width) => *width = (*width).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Writes the table to stdout.
    pub fn print(&self) -> Result<(), CliError> {
        write_stdout(&self.render())
    }
}

/// Writes `text` as it is (it should end in a newline) to stdout.
pub fn print_text(text: &str) -> Result<(), CliError> {
    write_stdout(text)
}

/// A size in decimal units the way registries and Docker show them:
/// `812 B`, `1.5 kB`, `4.2 MB`, `10 GB` (one decimal, dropped when zero).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // Find the unit, then round to tenths in integers to stay exact.
    let mut unit = 0;
    let mut scale: u128 = 1000;
    while unit + 1 < UNITS.len() && u128::from(bytes) >= scale * 1000 {
        unit += 1;
        scale *= 1000;
    }
    let mut tenths = (u128::from(bytes) * 10 + scale / 2) / scale;
    // 999_950 bytes rounds to 1000.0 kB: show it as 1 MB instead.
    if tenths >= 10_000 && unit + 1 < UNITS.len() {
        unit += 1;
        tenths /= 1000;
    }
    let (whole, fraction) = (tenths / 10, tenths % 10);
    if fraction == 0 {
        format!("{whole} {}", UNITS[unit])
    } else {
        format!("{whole}.{fraction} {}", UNITS[unit])
    }
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(CliError::failed(
            "Cannot write to standard output",
            error.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_decimal_units_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1 kB");
        assert_eq!(human_bytes(1_540), "1.5 kB");
        assert_eq!(human_bytes(999_949), "999.9 kB");
        assert_eq!(human_bytes(999_950), "1 MB");
        assert_eq!(human_bytes(4_210_000), "4.2 MB");
        assert_eq!(human_bytes(10_000_000_000), "10 GB");
        assert_eq!(human_bytes(12_480_000_000), "12.5 GB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }

    #[test]
    fn tables_align_values_in_one_column() {
        let table = Table::new()
            .row("reference", "a")
            .row("digest", "b")
            .row("", "c");
        assert_eq!(table.render(), "reference  a\ndigest     b\n           c\n");
        assert_eq!(Table::new().render(), "");
    }

    #[test]
    fn columns_pad_all_but_the_last_cell() {
        let mut columns = Columns::new(&["APP", "RELEASE", "DRIFT"]);
        columns.row(vec!["shop-web".into(), "12".into(), "0".into()]);
        columns.row(vec!["a".into(), "-".into(), "".into()]);
        assert_eq!(
            columns.render(),
            "APP       RELEASE  DRIFT\nshop-web  12       0\na         -\n"
        );
    }
}
