//! What a scenario reports: a table for people and one JSON line for
//! scripts and tests, plus the correctness checks that failed (lost or
//! duplicated events, errors), which make the tool exit with status 3.

use serde_json::{Map, Value, json};

use crate::server::PhaseUsage;
use crate::stats::{Summary, round3};

pub struct Report {
    pub scenario: &'static str,
    pub sync: String,
    rows: Vec<(String, String)>,
    params: Map<String, Value>,
    results: Map<String, Value>,
    pub violations: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, sync: &str) -> Report {
        Report {
            scenario,
            sync: sync.to_owned(),
            rows: Vec::new(),
            params: Map::new(),
            results: Map::new(),
            violations: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A parameter of the run (JSON `params`).
    pub fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    /// A measured number with a unit for the table.
    pub fn metric(&mut self, name: &str, value: f64, unit: &str) {
        let shown = if value.abs() >= 100.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.3}")
        };
        self.rows
            .push((name.to_owned(), format!("{shown} {unit}").trim_end().to_owned()));
        self.results.insert(name.to_owned(), json!(round3(value)));
    }

    /// A count.
    pub fn count(&mut self, name: &str, value: u64) {
        self.rows.push((name.to_owned(), value.to_string()));
        self.results.insert(name.to_owned(), json!(value));
    }

    /// A count that must be zero; a non-zero one is a violation.
    pub fn must_be_zero(&mut self, name: &str, value: u64) {
        self.count(name, value);
        if value != 0 {
            self.violations.push(format!("{name} = {value} (must be 0)"));
        }
    }

    /// Two counts that must be equal.
    pub fn must_equal(&mut self, name: &str, value: u64, expected: u64) {
        self.count(name, value);
        if value != expected {
            self.violations
                .push(format!("{name} = {value}, expected {expected}"));
        }
    }

    /// A latency distribution.
    pub fn latency(&mut self, name: &str, summary: Summary) {
        self.rows.push((name.to_owned(), summary.line()));
        self.results.insert(name.to_owned(), summary.to_json());
    }

    /// Server CPU and memory over a phase.
    pub fn usage(&mut self, name: &str, usage: PhaseUsage) {
        self.rows.push((name.to_owned(), usage.line()));
        self.results.insert(name.to_owned(), usage.to_json());
    }

    /// Any other JSON value (not shown in the table).
    pub fn json(&mut self, name: &str, value: Value) {
        self.results.insert(name.to_owned(), value);
    }

    /// A line shown under the table (and in JSON `notes`).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn to_json(&self, context: &Value) -> Value {
        json!({
            "scenario": self.scenario,
            "sync": self.sync,
            "ok": self.violations.is_empty(),
            "violations": self.violations,
            "params": self.params,
            "results": self.results,
            "notes": self.notes,
            "context": context,
        })
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(10).max(10);
        let mut out = format!("== {} (--sync {}) ==\n", self.scenario, self.sync);
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("params: {}\n", params.join(" ")));
        for (name, value) in &self.rows {
            out.push_str(&format!("  {name:<width$}  {value}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        if self.violations.is_empty() {
            out.push_str("  checks: ok\n");
        } else {
            for v in &self.violations {
                out.push_str(&format!("  CHECK FAILED: {v}\n"));
            }
        }
        out
    }
}
