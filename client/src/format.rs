//! Turning message bodies into text: JSON pretty-printed in its original key order, pitaya error
//! objects as `error CODE: msg`, anything else as hex plus lossy UTF-8.

use serde::de::IgnoredAny;
use serde_json::Value;

/// Whether `body` is one valid JSON document.
pub fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

/// A body as text: `(empty)`, pretty JSON, or `N bytes, not JSON` with hex and lossy UTF-8 lines.
pub fn body(body: &[u8]) -> String {
    if body.is_empty() {
        "(empty)".to_owned()
    } else if is_json(body) {
        pretty_json(body)
    } else {
        format!(
            "({} bytes, not JSON)\n  hex:  {}\n  utf8: {}",
            body.len(),
            hex(body),
            String::from_utf8_lossy(body)
        )
    }
}

/// An error response (flag 0x20): `error CODE: msg`, then its metadata if any. A body that is not
/// a pitaya error object is shown as it is.
pub fn error_response(body_bytes: &[u8]) -> String {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body_bytes) else {
        return format!("error response {}", body(body_bytes));
    };
    let code = match map.get("code") {
        Some(Value::String(code)) => code.clone(),
        Some(Value::Number(code)) => code.to_string(),
        _ => return format!("error response {}", body(body_bytes)),
    };
    let msg = match map.get("msg").or_else(|| map.get("message")) {
        Some(Value::String(msg)) => msg.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut out = format!("error {code}: {msg}");
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) if meta.is_empty() => {}
        Some(meta) => {
            let text = serde_json::to_string(meta).unwrap_or_default();
            out.push_str("\nmetadata ");
            out.push_str(&pretty_json(text.as_bytes()));
        }
    }
    out
}

/// Lower-case hex, bytes separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Re-indents valid JSON with two spaces, keeping key order and number spelling exactly as sent
/// (a `serde_json::Value` round trip would sort the keys). Input that is not JSON comes out
/// reformatted on a best-effort basis, never a panic.
pub fn pretty_json(json: &[u8]) -> String {
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut indent = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut index = 0;
    while let Some(&byte) = json.get(index) {
        index += 1;
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                out.push(byte);
            }
            b'{' | b'[' => {
                out.push(byte);
                let close = if byte == b'{' { b'}' } else { b']' };
                let next = json
                    .get(index..)
                    .unwrap_or_default()
                    .iter()
                    .position(|b| !b.is_ascii_whitespace());
                if let Some(skip) = next
                    && json.get(index + skip) == Some(&close)
                {
                    out.push(close);
                    index += skip + 1;
                } else {
                    indent += 1;
                    newline(&mut out, indent);
                }
            }
            b'}' | b']' => {
                indent = indent.saturating_sub(1);
                newline(&mut out, indent);
                out.push(byte);
            }
            b',' => {
                out.push(byte);
                newline(&mut out, indent);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(byte),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn newline(out: &mut Vec<u8>, indent: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b' ', indent * 2));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_key_order_and_numbers() {
        let text = pretty_json(br#"{"z":1,"a":[1.50,{"k":"v, {x}: \"q\""}],"e":{},"f":[ ]}"#);
        assert_eq!(
            text,
            "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    {\n      \"k\": \"v, {x}: \\\"q\\\"\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
    }

    #[test]
    fn pretty_scalars_and_garbage_do_not_panic() {
        assert_eq!(pretty_json(b"42"), "42");
        assert_eq!(pretty_json(br#""a""#), "\"a\"");
        for junk in [&b"}}]]"[..], b"{[", b"\"\\", b"\xff\xfe{"] {
            let _ = pretty_json(junk);
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(body(b""), "(empty)");
        assert_eq!(body(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(
            body(b"hi\xff"),
            "(3 bytes, not JSON)\n  hex:  68 69 ff\n  utf8: hi\u{fffd}"
        );
    }

    #[test]
    fn error_objects() {
        assert_eq!(
            error_response(br#"{"code":"PIT-404","msg":"pitaya/handler: x.y not found"}"#),
            "error PIT-404: pitaya/handler: x.y not found"
        );
        assert_eq!(
            error_response(br#"{"code":"ROOM-FULL","msg":"full","metadata":{"max":"4"}}"#),
            "error ROOM-FULL: full\nmetadata {\n  \"max\": \"4\"\n}"
        );
        assert_eq!(
            error_response(b"oops"),
            "error response (4 bytes, not JSON)\n  hex:  6f 6f 70 73\n  utf8: oops"
        );
        assert_eq!(error_response(br#"[1]"#), "error response [\n  1\n]");
    }
}
