//! The shape of a fake Discord request: the JSON body and path ids, Discord's 50035
//! "Invalid Form Body" `errors` tree, and checkers for one field each (strings with a length
//! limit, objects, lists, booleans, integers, URLs) that report into that tree.

use serde_json::{Map, Value, json};

use super::routes::Reply;

/// The top-level body must be a JSON object; an absent body counts as `{}`.
pub(super) fn body_object(body: Option<&Value>) -> Result<Map<String, Value>, Reply> {
    match body {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(Reply::form(json!({"_errors": [{
            "code": "MODEL_TYPE_CONVERT",
            "message": "Only dictionaries may be used in a ModelType"
        }]}))),
    }
}

/// A snowflake in a JSON body: a string of digits or a non-negative integer.
pub(super) fn snowflake_value(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => parse_snowflake(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

pub(super) fn parse_snowflake(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A snowflake in the path; Discord rejects a malformed one as a form error on that name.
pub(super) fn path_snowflake(name: &str, raw: &str) -> Result<u64, Reply> {
    parse_snowflake(raw).ok_or_else(|| {
        Reply::form(error_tree(
            &[name],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{raw}\" is not snowflake."),
        ))
    })
}

/// A JSON value as Discord quotes it in messages (strings without their quotes).
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The array under `key`; absent, `null` or not an array gives an empty list.
pub(super) fn array_of(obj: &Map<String, Value>, key: &str) -> Vec<Value> {
    obj.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Nothing a reader could see: no content, no embed with anything in it, no components.
/// An embed with only a colour or a URL shows nothing, and Discord treats `[{}]` as empty.
pub(super) fn is_empty_message(content: &str, embeds: &[Value], components: &[Value]) -> bool {
    const VISIBLE: [&str; 8] = [
        "title",
        "description",
        "footer",
        "author",
        "image",
        "thumbnail",
        "timestamp",
        "video",
    ];
    let embed_has_content = |embed: &Value| {
        let Some(map) = embed.as_object() else {
            return false;
        };
        let fields = map
            .get("fields")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        fields
            || VISIBLE
                .iter()
                .any(|key| map.get(*key).is_some_and(|v| !v.is_null()))
    };
    content.is_empty() && !embeds.iter().any(embed_has_content) && components.is_empty()
}

/// One error tree with a single leaf, for errors raised outside the validators.
pub(super) fn error_tree(path: &[&str], code: &str, message: &str) -> Value {
    let mut errors = FormErrors::default();
    errors.add(path, code, message);
    Value::Object(errors.tree)
}

/// Discord's 50035 `errors` tree: nested objects keyed by field name or list index, with
/// `{"_errors": [{"code", "message"}]}` at each failing field. Every failing field is
/// reported, not only the first.
#[derive(Default)]
pub(super) struct FormErrors {
    pub tree: Map<String, Value>,
}

impl FormErrors {
    pub fn add(&mut self, path: &[&str], code: &str, message: &str) {
        let mut node = &mut self.tree;
        for segment in path {
            let child = node.entry(*segment).or_insert_with(|| json!({}));
            node = match child {
                Value::Object(map) => map,
                _ => unreachable!("error tree nodes are objects"),
            };
        }
        if let Value::Array(list) = node.entry("_errors").or_insert_with(|| json!([])) {
            list.push(json!({"code": code, "message": message}));
        }
    }

    pub fn into_result(self) -> Result<(), Reply> {
        if self.tree.is_empty() {
            Ok(())
        } else {
            Err(Reply::form(Value::Object(self.tree)))
        }
    }
}

pub(super) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// A string field with a maximum length. Returns the string (even when too long) so callers
/// can count it towards the embed total; `None` when it is not a string.
///
/// The codes for a wrong JSON type are the best known ones, not confirmed against Discord.
pub(super) fn string_at<'a>(
    v: &'a Value,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match v {
        Value::String(s) => {
            if char_len(s) > max {
                errors.add(
                    path,
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {max} or fewer in length."),
                );
            }
            Some(s)
        }
        other => {
            errors.add(
                path,
                "BASE_TYPE_STRING",
                &format!("Could not interpret \"{}\" as string.", plain(other)),
            );
            None
        }
    }
}

/// An optional string field: absent or `null` is fine.
pub(super) fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => string_at(v, path, max, errors),
    }
}

/// A required string field: absent, `null` or empty is "This field is required".
pub(super) fn required_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
            Some(s)
        }
        Some(v) => string_at(v, path, max, errors),
    }
}

pub(super) fn object_at<'a>(
    v: &'a Value,
    path: &[&str],
    errors: &mut FormErrors,
) -> Option<&'a Map<String, Value>> {
    let map = v.as_object();
    if map.is_none() {
        errors.add(
            path,
            "MODEL_TYPE_CONVERT",
            "Only dictionaries may be used in a ModelType",
        );
    }
    map
}

/// A list with a maximum length; the items are returned even when there are too many so that
/// each one is still validated.
pub(super) fn list_at<'a>(
    v: &'a Value,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a Vec<Value>> {
    let Some(list) = v.as_array() else {
        errors.add(
            path,
            "LIST_TYPE_CONVERT",
            "Only iterables may be used in a ListType.",
        );
        return None;
    };
    if list.len() > max {
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {max} or fewer in length."),
        );
    }
    Some(list)
}

pub(super) fn check_bool(
    obj: &Map<String, Value>,
    key: &str,
    path: &[&str],
    errors: &mut FormErrors,
) {
    if let Some(v) = obj.get(key)
        && !v.is_null()
        && !v.is_boolean()
    {
        errors.add(path, "BASE_TYPE_BOOLEAN", "Must be either true or false.");
    }
}

/// An integer field within `min..=max`.
pub(super) fn check_int(v: &Value, path: &[&str], min: i64, max: i64, errors: &mut FormErrors) {
    let too_big = || format!("int value should be less than or equal to {max}.");
    match v {
        Value::Number(n) if n.is_i64() => {
            let i = n.as_i64().unwrap_or_default();
            if i < min {
                let message = format!("int value should be greater than or equal to {min}.");
                errors.add(path, "NUMBER_TYPE_MIN", &message);
            } else if i > max {
                errors.add(path, "NUMBER_TYPE_MAX", &too_big());
            }
        }
        // Integers above i64::MAX.
        Value::Number(n) if n.is_u64() => errors.add(path, "NUMBER_TYPE_MAX", &too_big()),
        other => errors.add(
            path,
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{}\" is not int.", plain(other)),
        ),
    }
}

/// A URL field: http(s) only, with a host that has a dot. Discord rejects hosts without a
/// TLD such as `http://localhost/` or `http://alertmanager:9093/` as "Not a well formed URL."
/// (alertmanager-discord#19, bugsink#280, JDA#699). `attachment://` is allowed for images.
pub(super) fn check_url(
    v: &Value,
    path: &[&str],
    max: usize,
    allow_attachment: bool,
    errors: &mut FormErrors,
) {
    let Some(url) = string_at(v, path, max, errors) else {
        return;
    };
    if allow_attachment && url.starts_with("attachment://") {
        return;
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        let message = format!(
            "Scheme \"{scheme}\" is not supported. Scheme must be one of ('http', 'https')."
        );
        errors.add(path, "URL_TYPE_INVALID_SCHEME", &message);
        return;
    }
    if !is_well_formed_http_url(&url[scheme.len() + 1..]) {
        errors.add(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.");
    }
}

/// `rest` is what follows `http:`. LOOSER: an IPv4 literal such as 127.0.0.1 passes (it has
/// dots); whether Discord accepts IP hosts is not known.
pub(super) fn is_well_formed_http_url(rest: &str) -> bool {
    let Some(rest) = rest.strip_prefix("//") else {
        return false;
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with('[') {
        // An IPv6 literal.
        return host_port.contains(']');
    }
    let host = host_port.split(':').next().unwrap_or("");
    let labels_ok = host
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-'));
    host.contains('.') && labels_ok
}
