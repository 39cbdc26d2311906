//! What transformers' jinja2 setup gives chat templates that minijinja does
//! not, or does differently: `raise_exception`, `strftime_now` in local time,
//! Python's backslash-newline in string literals, transformers' `tojson`
//! (Python's `json.dumps`: no HTML escaping, `", "` and `": "`, keys in
//! their order), and a size cap on every `{% set %}` value (so a doubling
//! loop fails fast).

use super::template::MAX_PROMPT_BYTES;
use minijinja::{ErrorKind, Value};

pub(crate) fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, which is `json.dumps` with those arguments.
pub(crate) fn tojson(value: &Value, indent: Option<Value>, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let bad = |m: &str| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {m}"));
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.clamp(0, 16) as usize)),
            (_, Some(s)) => Some(s.to_string()),
            _ => return Err(bad("indent must be a number or a string")),
        },
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    // Python's defaults: ", " and ": ", or "," and ": " when indenting.
    let (item, key) = match separators.as_deref() {
        Some([i, k]) => (i.clone(), k.clone()),
        Some(_) => return Err(bad("separators must be two strings")),
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let v: serde_json::Value = serde_json::to_value(value).map_err(|e| bad(&e.to_string()))?;
    let mut out = String::new();
    py_json(&v, &PyJson { indent, item, key, ensure_ascii, sort_keys }, 0, &mut out);
    if out.len() > MAX_PROMPT_BYTES {
        return Err(bad("the value is too large"));
    }
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<String>,
    item: String,
    key: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn py_json(v: &serde_json::Value, o: &PyJson, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    match v {
        J::String(s) => py_string(s, o.ensure_ascii, out),
        J::Array(a) if a.is_empty() => out.push_str("[]"),
        J::Object(m) if m.is_empty() => out.push_str("{}"),
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item);
                }
                newline(out, depth + 1);
                py_json(x, o, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(m) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = m.iter().collect();
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item);
                }
                newline(out, depth + 1);
                py_string(k, o.ensure_ascii, out);
                out.push_str(&o.key);
                py_json(x, o, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        // Numbers, booleans and null print as JSON does (Python writes 1.0 for a float one).
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Python writes it: `\uXXXX` for control characters (and,
/// with ensure_ascii, for everything past ASCII, as UTF-16 units).
fn py_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    // Templates (Llama 3.x, Granite, gpt-oss) print today's date. transformers
    // calls datetime.now().strftime(): local time, C strftime. Same here.
    local_strftime(&format).ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, "strftime_now: bad format"))
}

/// `format` applied to the local time by the C library's strftime, as Python
/// does for `datetime.now()`: a naive datetime, so `%Z` and `%z` print nothing,
/// and `%f` (Python's own) prints the microseconds.
fn local_strftime(format: &str) -> Option<String> {
    #[cfg(unix)]
    {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.subsec_micros();
        let mut f = String::with_capacity(format.len());
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                f.push(c);
                continue;
            }
            match chars.next() {
                Some('Z') | Some('z') => {}
                Some('f') => f.push_str(&format!("{micros:06}")),
                Some(d) => {
                    f.push('%');
                    f.push(d);
                }
                None => f.push('%'),
            }
        }
        let format = f.as_str();
        let fmt = std::ffi::CString::new(format).ok()?;
        let now = unsafe { libc::time(std::ptr::null_mut()) };
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // localtime_r reads TZ (tzset) like Python's time.localtime.
        extern "C" {
            fn tzset();
        }
        unsafe { tzset() };
        if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
            return None;
        }
        let mut buf = vec![0u8; 256 + 8 * format.len()];
        let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm) };
        if n == 0 && !format.is_empty() {
            return None;
        }
        buf.truncate(n);
        String::from_utf8(buf).ok()
    }
    #[cfg(not(unix))]
    {
        let _ = format;
        None
    }
}

/// Python's jinja2 decodes string literals with Python's escapes, where a
/// backslash before a line break continues the line (both vanish); minijinja
/// keeps them. Mistral Small 3.1's default system prompt relies on it. This
/// removes `\` + newline inside string literals in `{{ }}` and `{% %}` tags
/// (and nowhere else), so both render the same text.
pub(crate) fn python_line_continuations(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let (mut i, mut start) = (0, 0);
    let mut in_tag = false;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match (in_tag, quote) {
            (false, _) => {
                if b[i] == b'{' && matches!(b.get(i + 1), Some(b'{') | Some(b'%')) {
                    in_tag = true;
                    i += 2;
                    continue;
                }
            }
            (true, None) => {
                if matches!(b[i], b'}' | b'%') && b.get(i + 1) == Some(&b'}') {
                    in_tag = false;
                    i += 2;
                    continue;
                }
                if b[i] == b'\'' || b[i] == b'"' {
                    quote = Some(b[i]);
                }
            }
            (true, Some(q)) => {
                if b[i] == b'\\' {
                    let nl = match (b.get(i + 1), b.get(i + 2)) {
                        (Some(b'\n'), _) => 2,
                        (Some(b'\r'), Some(b'\n')) => 3,
                        _ => 0,
                    };
                    if nl > 0 {
                        out.push_str(&src[start..i]);
                        i += nl;
                        start = i;
                        continue;
                    }
                    i += 2; // an escaped character, never the closing quote
                    continue;
                }
                if b[i] == q {
                    quote = None;
                }
            }
        }
        i += 1;
    }
    out.push_str(&src[start.min(src.len())..]);
    out
}

/// Wraps the value of every `{% set target = expr %}` in `__hearth_cap(…)`,
/// which refuses a string over `MAX_PROMPT_BYTES` or a list of over a million
/// items. Fuel counts instructions, not bytes: a loop that doubles a namespace
/// string (`{% set ns.s = ns.s ~ ns.s %}`) needs only ~40 of them to ask for
/// terabytes. Values that persist across loop iterations can only do so
/// through such assignments, so capping them bounds every growing value.
pub(crate) fn cap_assignments(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 256);
    let mut rest = src;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let from = &rest[i..];
        let Some(end) = from.find("%}") else {
            out.push_str(from);
            return out;
        };
        let tag = &from[..end + 2];
        rest = &from[end + 2..];
        // A raw block is text: copied as it is, up to its end tag.
        if tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "raw" {
            out.push_str(tag);
            let stop = rest.find("endraw").map(|p| p + "endraw".len()).unwrap_or(rest.len());
            out.push_str(&rest[..stop]);
            rest = &rest[stop..];
            continue;
        }
        match rewrite_set(tag) {
            Some(t) => out.push_str(&t),
            None => out.push_str(tag),
        }
    }
    out.push_str(rest);
    out
}

fn rewrite_set(tag: &str) -> Option<String> {
    let inner = &tag[2..tag.len() - 2];
    let (lead, body) = match inner.chars().next() {
        Some(c @ ('-' | '+')) => (c.to_string(), &inner[1..]),
        _ => (String::new(), inner),
    };
    let (body, trail) = match body.chars().last() {
        Some(c @ ('-' | '+')) => (&body[..body.len() - 1], c.to_string()),
        _ => (body, String::new()),
    };
    let after = body.trim_start().strip_prefix("set")?;
    if !after.starts_with(char::is_whitespace) {
        return None;
    }
    let after = after.trim_start();
    let n = after.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))?;
    let target = &after[..n];
    let expr = after[n..].trim_start().strip_prefix('=')?;
    let expr = expr.trim();
    // Not an assignment (`==`), nothing assigned, or a tag cut short by a
    // `%}` inside a string literal (its quotes do not pair up): left alone.
    let paired = |q: char| expr.matches(q).count() % 2 == 0;
    if target.is_empty() || expr.is_empty() || expr.starts_with('=') || !paired('\'') || !paired('"') {
        return None;
    }
    Some(format!("{{%{lead} set {target} = __hearth_cap({expr}) {trail}%}}"))
}

pub(crate) fn hearth_cap(v: Value) -> std::result::Result<Value, minijinja::Error> {
    let too_big = match v.as_str() {
        Some(s) => s.len() > MAX_PROMPT_BYTES,
        None => v.len().is_some_and(|n| n > 1 << 20),
    };
    if too_big {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "the chat template built a value too large for any prompt"));
    }
    Ok(v)
}

