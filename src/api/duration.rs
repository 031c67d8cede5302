//! Durations written the Go way (`20m`, `1h30m`, `90s`), as Kubernetes users write them.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration kept with its original text, so it round-trips unchanged through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

impl GoDuration {
    pub fn value(&self) -> Duration {
        self.value
    }
}

const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration like 20m, 1h30m or 90s")]
pub struct InvalidDuration(String);

impl FromStr for GoDuration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration(text.to_string());
        let mut rest = text;
        let mut total = 0f64;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let seconds_per_unit = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(invalid()),
            };
            total += number * seconds_per_unit;
            rest = &rest[unit_len..];
        }
        let value = Duration::try_from_secs_f64(total).map_err(|_| invalid())?;
        Ok(Self {
            text: text.to_string(),
            value,
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("20m", 1200.0),
            ("1h30m", 5400.0),
            ("90s", 90.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0s", 0.0),
        ];
        for (text, secs) in cases {
            let d: GoDuration = text.parse().unwrap();
            assert_eq!(d.value().as_secs_f64(), secs, "{text}");
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn rejects_other_forms() {
        for text in ["", "20", "m", "20 m", "-5m", "1d", "1h30", "20M", "1e3s"] {
            assert!(text.parse::<GoDuration>().is_err(), "{text}");
        }
    }
}
