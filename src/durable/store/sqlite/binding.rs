//! Statement parameters bound only when their value changes.
//!
//! A checkpoint executes the same many-row statement thousands of times,
//! and in a sale most of a row's values equal those of the row in the same
//! place one execution before: the event's type, the SKU, the status, the
//! NULLs, the batch's time. SQLite keeps a statement's bindings across
//! executions (`sqlite3_reset` does not clear them), while binding a text
//! copies it into a fresh allocation, freeing the one before: ~280
//! instructions a text, ~80 an integer, ~50 a NULL (callgrind,
//! docs/benchmarks.md). `Reused` remembers what each parameter holds and
//! binds only what differs.
//!
//! rusqlite clears a cached statement's bindings when it goes back to its
//! cache, so a `Reused` owns the `CachedStatement` it wraps and starts
//! knowing nothing: what it remembers is never older than the statement.

use rusqlite::types::Null;
use rusqlite::CachedStatement;

/// What a parameter holds, as far as `Reused` knows.
#[derive(Debug, PartialEq)]
enum Held {
    Unknown,
    Null,
    Int(i64),
    Text(String),
}

/// A cached statement and what its parameters hold.
pub(super) struct Reused<'c> {
    statement: CachedStatement<'c>,
    /// Per parameter, index - 1.
    held: Vec<Held>,
}

impl<'c> Reused<'c> {
    pub(super) fn new(statement: CachedStatement<'c>) -> Reused<'c> {
        let count = statement.parameter_count();
        Reused {
            statement,
            held: (0..count).map(|_| Held::Unknown).collect(),
        }
    }

    fn holds(&self, index: usize) -> Option<&Held> {
        index.checked_sub(1).and_then(|i| self.held.get(i))
    }

    /// Records what parameter `index` now holds (`Unknown` when a bind
    /// failed: SQLite's own state is then not assumed).
    fn note(&mut self, index: usize, now: Held) {
        if let Some(slot) = index.checked_sub(1).and_then(|i| self.held.get_mut(i)) {
            *slot = now;
        }
    }

    pub(super) fn int(&mut self, index: usize, value: i64) -> rusqlite::Result<()> {
        if self.holds(index) == Some(&Held::Int(value)) {
            return Ok(());
        }
        self.note(index, Held::Unknown);
        self.statement.raw_bind_parameter(index, value)?;
        self.note(index, Held::Int(value));
        Ok(())
    }

    pub(super) fn null(&mut self, index: usize) -> rusqlite::Result<()> {
        if self.holds(index) == Some(&Held::Null) {
            return Ok(());
        }
        self.note(index, Held::Unknown);
        self.statement.raw_bind_parameter(index, Null)?;
        self.note(index, Held::Null);
        Ok(())
    }

    pub(super) fn opt_int(&mut self, index: usize, value: Option<i64>) -> rusqlite::Result<()> {
        match value {
            Some(value) => self.int(index, value),
            None => self.null(index),
        }
    }

    pub(super) fn text(&mut self, index: usize, value: &str) -> rusqlite::Result<()> {
        if matches!(self.holds(index), Some(Held::Text(held)) if held == value) {
            return Ok(());
        }
        // The text's buffer is kept for the next value of this parameter.
        let mut kept = match index.checked_sub(1).and_then(|i| self.held.get_mut(i)) {
            Some(Held::Text(held)) => std::mem::take(held),
            _ => String::new(),
        };
        self.note(index, Held::Unknown);
        self.statement.raw_bind_parameter(index, value)?;
        kept.clear();
        kept.push_str(value);
        self.note(index, Held::Text(kept));
        Ok(())
    }

    pub(super) fn opt_text(&mut self, index: usize, value: Option<&str>) -> rusqlite::Result<()> {
        match value {
            Some(value) => self.text(index, value),
            None => self.null(index),
        }
    }

    pub(super) fn execute(&mut self) -> rusqlite::Result<usize> {
        self.statement.raw_execute()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Values equal to the last execution's are not bound again, and every
    /// row still holds exactly what was asked for it: the same value twice,
    /// a value then NULL then the value, a text that grows and shrinks,
    /// and an integer where a text was.
    #[test]
    fn rows_hold_what_was_asked_whatever_was_bound_before() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b)")
            .unwrap();
        let rows: [(i64, Option<i64>, Option<&str>); 6] = [
            (1, Some(7), Some("tee")),
            (2, Some(7), Some("tee")),
            (3, None, Some("t")),
            (4, Some(7), None),
            (5, Some(8), Some("a longer text")),
            (6, Some(8), Some("")),
        ];
        {
            let statement = db.prepare_cached("INSERT INTO t VALUES (?, ?, ?)").unwrap();
            let mut reused = Reused::new(statement);
            for (n, a, b) in rows {
                reused.int(1, n).unwrap();
                reused.opt_int(2, a).unwrap();
                reused.opt_text(3, b).unwrap();
                reused.execute().unwrap();
            }
            // Where an integer was, a text; the table's column takes any.
            reused.int(1, 7).unwrap();
            reused.text(2, "7").unwrap();
            reused.null(3).unwrap();
            reused.execute().unwrap();
            assert!(reused.int(0, 1).is_err(), "parameters count from 1");
        }
        let mut read = db
            .prepare("SELECT n, a, b, typeof(a) FROM t ORDER BY n")
            .unwrap();
        let got: Vec<(i64, Option<String>, Option<String>, String)> = read
            .query_map([], |r| {
                let a: rusqlite::types::Value = r.get(1)?;
                let a = match a {
                    rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                    rusqlite::types::Value::Text(t) => Some(t),
                    _ => None,
                };
                Ok((r.get(0)?, a, r.get(2)?, r.get(3)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let text = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            [
                (1, text("7"), text("tee"), "integer".into()),
                (2, text("7"), text("tee"), "integer".into()),
                (3, None, text("t"), "null".into()),
                (4, text("7"), None, "integer".into()),
                (5, text("8"), text("a longer text"), "integer".into()),
                (6, text("8"), text(""), "integer".into()),
                (7, text("7"), None, "text".into()),
            ]
        );
    }
}
