//! JSON: one line per scalar, named by its path (`slo.availability:
//! 99.95%`, `owners[0]: Amara Okafor`).

use serde_json::Value;

use super::ParseError;

pub fn to_text(source: &str) -> Result<String, ParseError> {
    let value: Value = serde_json::from_str(source)
        .map_err(|e| ParseError::Permanent(format!("corrupt: the file is not valid JSON: {e}")))?;
    let mut out = String::new();
    walk(&value, &mut String::new(), &mut out);
    Ok(out)
}

fn walk(value: &Value, path: &mut String, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(child, path, out);
                path.truncate(len);
            }
        }
        Value::String(s) => line(path, s, out),
        Value::Null => line(path, "null", out),
        other => line(path, &other.to_string(), out),
    }
}

fn line(path: &str, value: &str, out: &mut String) {
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_values_are_named_by_path() {
        let text = super::to_text(r#"{"owners":["Amara Okafor"],"slo":{"availability":"99.95%"}}"#).unwrap();
        assert!(text.contains("owners[0]: Amara Okafor"), "{text}");
        assert!(text.contains("slo.availability: 99.95%"), "{text}");
    }
}
