//! kstatus: how Flux, `kubectl wait` and cli-utils decide whether an object is done, written
//! from the rules of cli-utils' `pkg/kstatus/status` (generic properties, then the Ready
//! condition, else Current). No rule is specific to our kinds: kstatus has none for custom
//! resources, so what it says comes from the status the operator writes.

use serde_json::Value;

/// kstatus's verdict (`NotFound` and `Unknown` are about reading the object, not its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KStatus {
    InProgress,
    Failed,
    Current,
    Terminating,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub status: KStatus,
    /// The reason of the condition that decided, if one did.
    pub reason: Option<String>,
    pub message: String,
}

fn verdict(status: KStatus, reason: Option<&str>, message: impl Into<String>) -> Computed {
    Computed {
        status,
        reason: reason.map(str::to_string),
        message: message.into(),
    }
}

/// An integer field; kstatus fails on one of another type.
fn int_at(obj: &Value, path: &[&str]) -> Result<Option<i64>, String> {
    let mut v = obj;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    v.as_i64()
        .map(Some)
        .ok_or_else(|| format!("{} is {v}, not an integer", path.join(".")))
}

/// One condition as kstatus reads it: type, status, reason, message.
struct Condition<'a> {
    type_: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

fn conditions(obj: &Value) -> Result<Vec<Condition<'_>>, String> {
    let Some(list) = obj.get("status").and_then(|s| s.get("conditions")) else {
        return Ok(vec![]);
    };
    let list = list
        .as_array()
        .ok_or_else(|| format!("status.conditions is {list}, not a list"))?;
    list.iter()
        .map(|c| {
            let field = |name: &str| match c.get(name) {
                None => Ok(""),
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| format!("condition {name} is {v}, not a string")),
            };
            Ok(Condition {
                type_: field("type")?,
                status: field("status")?,
                reason: field("reason")?,
                message: field("message")?,
            })
        })
        .collect()
}

/// kstatus's `Compute` for an object of a kind it has no specific rules for.
pub fn compute(obj: &Value) -> Result<Computed, String> {
    let deleting = obj
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if deleting {
        return Ok(verdict(
            KStatus::Terminating,
            None,
            "Resource scheduled for deletion",
        ));
    }
    if let Some(generation) = int_at(obj, &["metadata", "generation"])? {
        // Compared only when the status has the field at all.
        if let Some(observed) = int_at(obj, &["status", "observedGeneration"])?
            && observed != generation
        {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
            return Ok(verdict(
                KStatus::InProgress,
                Some("LatestGenerationNotObserved"),
                format!(
                    "{kind} generation is {generation}, but latest observed generation is {observed}"
                ),
            ));
        }
    }
    let conditions = conditions(obj)?;
    for c in &conditions {
        if c.type_ == "Reconciling" && c.status == "True" {
            return Ok(verdict(KStatus::InProgress, Some(c.reason), c.message));
        }
        if c.type_ == "Stalled" && c.status == "True" {
            return Ok(verdict(KStatus::Failed, Some(c.reason), c.message));
        }
    }
    // No legacy rules for custom resources; then the widely used Ready condition.
    if let Some(c) = conditions.iter().find(|c| c.type_ == "Ready") {
        match c.status {
            "True" => return Ok(verdict(KStatus::Current, None, "Resource is Ready")),
            "False" | "Unknown" => {
                return Ok(verdict(KStatus::InProgress, Some(c.reason), c.message));
            }
            _ => {}
        }
    }
    Ok(verdict(KStatus::Current, None, "Resource is current"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status_of(obj: Value) -> KStatus {
        compute(&obj).unwrap().status
    }

    #[test]
    fn the_rules_in_their_order() {
        use KStatus::*;
        let cond =
            |t: &str, s: &str| json!({"type": t, "status": s, "reason": "R", "message": "m"});
        let obj = |generation: Value, status: Value| json!({"kind": "AcsIdentity", "metadata": {"generation": generation}, "status": status});
        let cases = [
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [cond("Ready", "True")]}}),
                Terminating,
            ),
            (json!({"metadata": {}}), Current),
            (obj(json!(1), json!({})), Current),
            (
                obj(
                    json!(2),
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "True")]}),
                ),
                InProgress,
            ),
            (obj(json!(1), json!({"observedGeneration": 0})), InProgress),
            (
                obj(
                    json!(1),
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "True"), cond("Stalled", "True")]}),
                ),
                Failed,
            ),
            (
                obj(
                    json!(1),
                    json!({"observedGeneration": 1, "conditions": [cond("Reconciling", "True"), cond("Stalled", "True")]}),
                ),
                InProgress,
            ),
            (
                obj(
                    json!(1),
                    json!({"conditions": [cond("Stalled", "True"), cond("Reconciling", "True")]}),
                ),
                Failed,
            ),
            (
                obj(
                    json!(1),
                    json!({"conditions": [cond("Stalled", "False"), cond("Ready", "True")]}),
                ),
                Current,
            ),
            (
                obj(json!(1), json!({"conditions": [cond("Ready", "False")]})),
                InProgress,
            ),
            (
                obj(json!(1), json!({"conditions": [cond("Ready", "Unknown")]})),
                InProgress,
            ),
            (
                obj(json!(1), json!({"conditions": [cond("Other", "False")]})),
                Current,
            ),
        ];
        for (i, (obj, want)) in cases.into_iter().enumerate() {
            assert_eq!(status_of(obj.clone()), want, "case {i}: {obj}");
        }
        assert!(compute(&obj(json!(1), json!({"observedGeneration": "1"}))).is_err());
        assert!(compute(&obj(json!(1), json!({"conditions": {}}))).is_err());
    }
}
