//! Reading JSON request bodies field by field, so a 400 names every bad field
//! instead of stopping at serde's first complaint.
//!
//! A body must be one JSON object; unknown fields are refused (a typo should not be
//! silently ignored). Text bound for PostgreSQL may not contain NUL, which `text`
//! cannot store.

use super::error::ApiError;
use serde_json::{Map, Value};

/// The media type of a Content-Type value, without parameters (`type/subtype`).
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Accepts a missing Content-Type (the C clients send none) or `application/json`
/// with any parameters; anything else is 415.
pub fn check_content_type(ct: Option<&str>) -> Result<(), ApiError> {
    match ct.map(media_type) {
        None => Ok(()),
        Some(m) if m.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(_) => Err(ApiError::UnsupportedMediaType("expected application/json")),
    }
}

/// Writes `{"<key>":<value>}`: the whole body of a counter value or a new id.
pub fn write_int_object(out: &mut Vec<u8>, key: &str, value: i64) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    out.push(b'}');
}

/// A JSON object being validated; problems accumulate until [`Fields::finish`].
pub struct Fields {
    map: Map<String, Value>,
    problems: Vec<String>,
}

impl Fields {
    /// Parses `body` as a JSON object whose keys are all in `allowed`.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::Invalid(format!("body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::Invalid("body must be a JSON object".into()));
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                problems.push(format!("{key}: unknown field"));
            }
        }
        Ok(Fields { map, problems })
    }

    pub fn problem(&mut self, field: &str, what: &str) {
        self.problems.push(format!("{field}: {what}"));
    }

    fn get(&mut self, field: &str) -> Option<&Value> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.problems.push(format!("{field}: is required"));
                None
            }
            Some(_) => self.map.get(field),
        }
    }

    /// A string of `min..=max` characters (as JSON Schema counts them: Unicode
    /// scalar values) without NUL.
    pub fn string(&mut self, field: &str, min: usize, max: usize) -> Option<String> {
        let v = self.get(field)?;
        let Value::String(s) = v else {
            self.problem(field, "must be a string");
            return None;
        };
        let s = s.clone();
        let chars = s.chars().count();
        if chars < min || chars > max {
            self.problem(field, &format!("must be {min} to {max} characters long"));
            return None;
        }
        if s.contains('\0') {
            self.problem(field, "must not contain NUL");
            return None;
        }
        Some(s)
    }

    /// A finite number.
    pub fn number(&mut self, field: &str) -> Option<f64> {
        let v = self.get(field)?;
        match v.as_f64() {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.problem(field, "must be a finite number");
                None
            }
        }
    }

    /// An integer in `min..=max`, or `None` when the field is absent (`null` is
    /// not absent: it is refused like any other non-integer).
    pub fn optional_u64(&mut self, field: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.map.get(field)?;
        // JSON has one number type: 30.0 is the integer 30 (JSON Schema agrees).
        let n = v
            .as_u64()
            .or_else(|| integral(v).and_then(|f| u64::try_from(f).ok()));
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(field, &format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// An integer that fits in 32 signed bits.
    pub fn int32(&mut self, field: &str) -> Option<i32> {
        let v = self.get(field)?;
        match v.as_i64().or_else(|| integral(v)).map(i32::try_from) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                self.problem(field, "must fit in a 32-bit signed integer");
                None
            }
            None => {
                self.problem(field, "must be an integer");
                None
            }
        }
    }

    /// An array of at most `max_items` strings, each 1 to `max_len` characters
    /// without NUL.
    pub fn strings(&mut self, field: &str, max_items: usize, max_len: usize) -> Option<Vec<String>> {
        let v = self.get(field)?;
        let Value::Array(items) = v else {
            self.problem(field, "must be an array of strings");
            return None;
        };
        if items.len() > max_items {
            self.problem(field, &format!("must have at most {max_items} items"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut bad = None;
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) if !s.is_empty() && s.chars().count() <= max_len && !s.contains('\0') => {
                    out.push(s.clone())
                }
                _ => {
                    bad = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = bad {
            self.problem(
                &format!("{field}[{i}]"),
                &format!("must be a string of 1 to {max_len} characters without NUL"),
            );
            return None;
        }
        Some(out)
    }

    /// Ends validation: every problem found, joined, as one 400.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.problems.join("; ")))
        }
    }
}

/// A JSON number with no fractional part (`30.0`), as an integer.
fn integral(v: &Value) -> Option<i64> {
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let body = br#"{"a": 1, "b": "x", "c": [1], "zz": true}"#;
        let mut f = Fields::parse(body, &["a", "b", "c", "d"]).expect("object");
        assert!(f.string("a", 1, 10).is_none());
        assert!(f.number("b").is_none());
        assert!(f.strings("c", 4, 8).is_none());
        assert!(f.int32("d").is_none());
        let Err(ApiError::Invalid(detail)) = f.finish() else {
            panic!("expected 400")
        };
        for part in [
            "zz: unknown field",
            "a: must be a string",
            "b: must be a finite number",
            "c[0]",
            "d: is required",
        ] {
            assert!(detail.contains(part), "{detail}");
        }
    }

    #[test]
    fn int32_range_and_content_type() {
        let mut f = Fields::parse(br#"{"m": 4294967296}"#, &["m"]).expect("object");
        assert!(f.int32("m").is_none());
        let mut f = Fields::parse(br#"{"m": 30.0, "n": 30.5}"#, &["m", "n"]).expect("object");
        assert_eq!(f.int32("m"), Some(30));
        assert_eq!(f.int32("n"), None);
        assert!(check_content_type(Some("application/json; charset=utf-8")).is_ok());
        assert!(check_content_type(None).is_ok());
        assert!(check_content_type(Some("text/plain")).is_err());
        assert!(Fields::parse(b"[1]", &[]).is_err());
        assert!(Fields::parse(b"{", &[]).is_err());
    }
}
