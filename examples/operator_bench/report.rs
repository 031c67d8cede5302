//! The figures of one run: printed as a table for people and as one JSON line for tools.

use serde_json::{Map, Value, json};

pub struct Row {
    key: String,
    value: Value,
    goal: String,
}

pub struct Report {
    pub scenario: String,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            rows: Vec::new(),
        }
    }

    /// Adds a figure; floats are rounded to three decimals.
    pub fn add(&mut self, key: &str, value: impl Into<Value>, goal: &str) {
        let value = match value.into() {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or_default();
                json!((f * 1000.0).round() / 1000.0)
            }
            v => v,
        };
        self.rows.push(Row {
            key: key.to_string(),
            value,
            goal: goal.to_string(),
        });
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.key.len()).max().unwrap_or(0);
        let mut out = format!("\n== operator_bench {} ==\n", self.scenario);
        for r in &self.rows {
            let value = match &r.value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let goal = if r.goal.is_empty() {
                String::new()
            } else {
                format!("   (goal {})", r.goal)
            };
            out.push_str(&format!("{:width$}  {value}{goal}\n", r.key));
        }
        out
    }

    pub fn json_line(&self) -> String {
        let mut map = Map::new();
        map.insert("bench".into(), json!("operator_bench"));
        map.insert("scenario".into(), json!(self.scenario));
        for r in &self.rows {
            map.insert(r.key.clone(), r.value.clone());
        }
        Value::Object(map).to_string()
    }
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Figures that are not numbers (NaN, infinite) become null in JSON.
pub fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}
