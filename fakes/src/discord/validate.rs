//! What the fake Discord accepts in a request body and a path: the message fields, embeds,
//! components and mentions, with Discord's limits, answered as 50035 "Invalid Form Body" with an
//! `errors` tree that names every failing field.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value, json};

use super::routes::Reply;

// Limits from the docs and the OpenAPI spec (bots get 2000 content chars; the spec's 4000 is
// for Nitro users).
const MAX_CONTENT: usize = 2000;
const MAX_EMBEDS: usize = 10;
const MAX_EMBED_TOTAL: usize = 6000;
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FIELDS: usize = 25;
const MAX_FIELD_NAME: usize = 256;
const MAX_FIELD_VALUE: usize = 1024;
const MAX_FOOTER: usize = 2048;
const MAX_AUTHOR: usize = 256;
const MAX_EMBED_URL: usize = 2048;
const MAX_ROWS: usize = 5;
const MAX_BUTTONS: usize = 5;
const MAX_LABEL: usize = 80;
const MAX_CUSTOM_ID: usize = 100;
const MAX_BUTTON_URL: usize = 512;
const MAX_COLOR: i64 = 0xFF_FFFF;

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

fn parse_snowflake(s: &str) -> Option<u64> {
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

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// A string field with a maximum length. Returns the string (even when too long) so callers
/// can count it towards the embed total; `None` when it is not a string.
///
/// The codes for a wrong JSON type are the best known ones, not confirmed against Discord.
fn string_at<'a>(
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
fn optional_string<'a>(
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
fn required_string<'a>(
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
fn list_at<'a>(
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
fn check_int(v: &Value, path: &[&str], min: i64, max: i64, errors: &mut FormErrors) {
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
fn check_url(
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
fn is_well_formed_http_url(rest: &str) -> bool {
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

/// The message fields shared by create and edit. Absent and `null` fields are not checked.
pub(super) fn validate_message_fields(obj: &Map<String, Value>, errors: &mut FormErrors) {
    optional_string(obj, "content", &["content"], MAX_CONTENT, errors);
    if let Some(v) = obj.get("embeds").filter(|v| !v.is_null()) {
        validate_embeds(v, errors);
    }
    if let Some(v) = obj.get("components").filter(|v| !v.is_null()) {
        validate_components(v, errors);
    }
    if let Some(v) = obj.get("allowed_mentions").filter(|v| !v.is_null()) {
        validate_allowed_mentions(v, errors);
    }
    if let Some(v) = obj.get("sticker_ids").filter(|v| !v.is_null()) {
        list_at(v, &["sticker_ids"], 3, errors);
    }
    if let Some(v) = obj.get("attachments").filter(|v| !v.is_null())
        && let Some(list) = list_at(v, &["attachments"], 10, errors)
        && !list.is_empty()
    {
        // LOOSER (and different): the fake takes no file uploads, so it cannot tell a valid
        // attachment reference from an invalid one. countersign never sends attachments.
        errors.add(
            &["attachments"],
            "FAKE_UNSUPPORTED",
            "countersign-fakes: attachments are not supported by the fake Discord",
        );
    }
    check_bool(obj, "tts", &["tts"], errors);
    check_bool(obj, "enforce_nonce", &["enforce_nonce"], errors);
    if let Some(v) = obj.get("flags").filter(|v| !v.is_null()) {
        check_int(v, &["flags"], 0, i64::MAX, errors);
    }
    match obj.get("nonce") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_i64() => {}
        Some(Value::String(s)) if char_len(s) <= 25 => {}
        Some(Value::String(_)) => {
            errors.add(
                &["nonce"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            );
        }
        Some(_) => errors.add(
            &["nonce"],
            "NONCE_TYPE_INVALID_TYPE",
            "This field must be a string or integer.",
        ),
    }
    // LOOSER: `poll` and `flags` bits are not checked. (`message_reference` is checked in
    // `message_reference`, where the replied-to message can be looked up.)
}

fn validate_embeds(v: &Value, errors: &mut FormErrors) {
    let Some(embeds) = list_at(v, &["embeds"], MAX_EMBEDS, errors) else {
        return;
    };
    let mut total = 0;
    for (i, embed) in embeds.iter().enumerate() {
        total += validate_embed(embed, &i.to_string(), errors);
    }
    if total > MAX_EMBED_TOTAL {
        errors.add(
            &["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        );
    }
}

/// Validates one embed and returns the characters it counts towards the 6000 total: title,
/// description, field names and values, footer text and author name.
fn validate_embed(v: &Value, i: &str, errors: &mut FormErrors) -> usize {
    let Some(embed) = object_at(v, &["embeds", i], errors) else {
        return 0;
    };
    let mut size = 0;
    let count = |s: Option<&str>| s.map_or(0, char_len);
    size += count(optional_string(
        embed,
        "title",
        &["embeds", i, "title"],
        MAX_TITLE,
        errors,
    ));
    size += count(optional_string(
        embed,
        "description",
        &["embeds", i, "description"],
        MAX_DESCRIPTION,
        errors,
    ));
    if let Some(url) = embed.get("url").filter(|v| !v.is_null()) {
        check_url(url, &["embeds", i, "url"], MAX_EMBED_URL, false, errors);
    }
    if let Some(color) = embed.get("color").filter(|v| !v.is_null()) {
        check_int(color, &["embeds", i, "color"], 0, MAX_COLOR, errors);
    }
    if let Some(ts) = embed.get("timestamp").filter(|v| !v.is_null()) {
        check_timestamp(ts, &["embeds", i, "timestamp"], errors);
    }
    if let Some(fields) = embed.get("fields").filter(|v| !v.is_null())
        && let Some(fields) = list_at(fields, &["embeds", i, "fields"], MAX_FIELDS, errors)
    {
        for (f, field) in fields.iter().enumerate() {
            let f = f.to_string();
            let Some(field) = object_at(field, &["embeds", i, "fields", &f], errors) else {
                continue;
            };
            let name_path = ["embeds", i, "fields", &f, "name"];
            size += count(required_string(
                field,
                "name",
                &name_path,
                MAX_FIELD_NAME,
                errors,
            ));
            let value_path = ["embeds", i, "fields", &f, "value"];
            size += count(required_string(
                field,
                "value",
                &value_path,
                MAX_FIELD_VALUE,
                errors,
            ));
            check_bool(
                field,
                "inline",
                &["embeds", i, "fields", &f, "inline"],
                errors,
            );
        }
    }
    if let Some(footer) = embed.get("footer").filter(|v| !v.is_null())
        && let Some(footer) = object_at(footer, &["embeds", i, "footer"], errors)
    {
        let text_path = ["embeds", i, "footer", "text"];
        size += count(required_string(
            footer, "text", &text_path, MAX_FOOTER, errors,
        ));
        if let Some(icon) = footer.get("icon_url").filter(|v| !v.is_null()) {
            check_url(
                icon,
                &["embeds", i, "footer", "icon_url"],
                MAX_EMBED_URL,
                true,
                errors,
            );
        }
    }
    if let Some(author) = embed.get("author").filter(|v| !v.is_null())
        && let Some(author) = object_at(author, &["embeds", i, "author"], errors)
    {
        let name_path = ["embeds", i, "author", "name"];
        size += count(required_string(
            author, "name", &name_path, MAX_AUTHOR, errors,
        ));
        if let Some(url) = author.get("url").filter(|v| !v.is_null()) {
            check_url(
                url,
                &["embeds", i, "author", "url"],
                MAX_EMBED_URL,
                false,
                errors,
            );
        }
        if let Some(icon) = author.get("icon_url").filter(|v| !v.is_null()) {
            check_url(
                icon,
                &["embeds", i, "author", "icon_url"],
                MAX_EMBED_URL,
                true,
                errors,
            );
        }
    }
    for key in ["image", "thumbnail"] {
        if let Some(media) = embed.get(key).filter(|v| !v.is_null())
            && let Some(media) = object_at(media, &["embeds", i, key], errors)
        {
            match media.get("url").filter(|v| !v.is_null()) {
                Some(url) => {
                    check_url(url, &["embeds", i, key, "url"], MAX_EMBED_URL, true, errors)
                }
                None => errors.add(
                    &["embeds", i, key, "url"],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ),
            }
        }
    }
    // LOOSER: `provider` and `video` (ignored by Discord for bots) are not checked.
    size
}

/// ISO 8601, as serenity's `Timestamp` and chrono produce it. The error code is the best known.
fn check_timestamp(v: &Value, path: &[&str], errors: &mut FormErrors) {
    let ok = v.as_str().is_some_and(|s| {
        DateTime::parse_from_rfc3339(s).is_ok()
            || NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
    });
    if !ok {
        let message = format!("Could not parse {}. Should be ISO8601.", plain(v));
        errors.add(path, "DATE_TIME_TYPE_PARSE", &message);
    }
}

/// Legacy message components: up to 5 action rows (type 1) of up to 5 buttons (type 2).
/// STRICTER than Discord: select menus and Components V2 (flag 1 << 15) are refused, because
/// countersign sends neither and the fake does not model them.
fn validate_components(v: &Value, errors: &mut FormErrors) {
    let Some(rows) = list_at(v, &["components"], MAX_ROWS, errors) else {
        return;
    };
    let mut custom_ids = HashSet::new();
    for (r, row) in rows.iter().enumerate() {
        let r = r.to_string();
        let Some(row) = object_at(row, &["components", &r], errors) else {
            continue;
        };
        if row.get("type") != Some(&json!(1)) {
            errors.add(
                &["components", &r, "type"],
                "BASE_TYPE_CHOICES",
                "Value must be one of {1}.",
            );
            continue;
        }
        let buttons = match row.get("components") {
            None | Some(Value::Null) => {
                errors.add(
                    &["components", &r, "components"],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
                continue;
            }
            Some(v) => match v.as_array() {
                Some(list) => list,
                None => {
                    errors.add(
                        &["components", &r, "components"],
                        "LIST_TYPE_CONVERT",
                        "Only iterables may be used in a ListType.",
                    );
                    continue;
                }
            },
        };
        if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
            errors.add(
                &["components", &r, "components"],
                "BASE_TYPE_BAD_LENGTH",
                &format!("Must be between 1 and {MAX_BUTTONS} in length."),
            );
        }
        for (b, button) in buttons.iter().enumerate() {
            let b = b.to_string();
            validate_button(
                button,
                &["components", &r, "components", &b],
                &mut custom_ids,
                errors,
            );
        }
    }
}

/// Link buttons (style 5) need a `url` and no `custom_id`; premium buttons (style 6) need a
/// `sku_id`; the others need a `custom_id` (1..=100 chars, unique in the message) and no `url`.
/// Codes for the mutual-exclusion errors are not documented by Discord; the messages are the
/// ones clients report.
fn validate_button(
    v: &Value,
    path: &[&str],
    custom_ids: &mut HashSet<String>,
    errors: &mut FormErrors,
) {
    let Some(button) = object_at(v, path, errors) else {
        return;
    };
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = path.to_vec();
        p.push(field);
        p
    };
    if button.get("type") != Some(&json!(2)) {
        errors.add(
            &at("type"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {2}.",
        );
        return;
    }
    let style = button.get("style").and_then(Value::as_u64);
    let Some(style @ 1..=6) = style else {
        errors.add(
            &at("style"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 2, 3, 4, 5, 6}.",
        );
        return;
    };
    optional_string(button, "label", &at("label"), MAX_LABEL, errors);
    check_bool(button, "disabled", &at("disabled"), errors);
    let present = |key: &str| button.get(key).is_some_and(|v| !v.is_null());
    match style {
        5 => {
            match button.get("url").filter(|v| !v.is_null()) {
                Some(url) => check_url(url, &at("url"), MAX_BUTTON_URL, false, errors),
                None => errors.add(&at("url"), "BASE_TYPE_REQUIRED", "This field is required"),
            }
            if present("custom_id") {
                errors.add(
                    &at("custom_id"),
                    "COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                    "A custom id and url cannot both be specified",
                );
            }
        }
        6 => {
            if !present("sku_id") {
                errors.add(
                    &at("sku_id"),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            }
            for key in ["custom_id", "url"] {
                if present(key) {
                    errors.add(
                        &at(key),
                        "COMPONENT_FIELD_NOT_ALLOWED",
                        "Premium buttons cannot have this field",
                    );
                }
            }
        }
        _ => {
            if present("url") {
                errors.add(
                    &at("url"),
                    "COMPONENT_URL_NOT_ALLOWED",
                    "A custom id and url cannot both be specified",
                );
            }
            if let Some(id) =
                required_string(button, "custom_id", &at("custom_id"), MAX_CUSTOM_ID, errors)
                && !id.is_empty()
                && !custom_ids.insert(id.to_owned())
            {
                errors.add(
                    &at("custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                );
            }
        }
    }
    // LOOSER: a button with neither label nor emoji, and `emoji` contents, are not checked.
}

/// `parse` may hold "roles", "users", "everyone"; `users`/`roles` at most 100 ids each, and
/// `parse: ["users"]` excludes an explicit `users` list (likewise roles).
fn validate_allowed_mentions(v: &Value, errors: &mut FormErrors) {
    let Some(mentions) = object_at(v, &["allowed_mentions"], errors) else {
        return;
    };
    let mut parsed = Vec::new();
    if let Some(parse) = mentions.get("parse").filter(|v| !v.is_null())
        && let Some(list) = list_at(parse, &["allowed_mentions", "parse"], 3, errors)
    {
        for (i, item) in list.iter().enumerate() {
            match item.as_str() {
                Some(kind @ ("roles" | "users" | "everyone")) => parsed.push(kind),
                _ => errors.add(
                    &["allowed_mentions", "parse", &i.to_string()],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of ('roles', 'users', 'everyone').",
                ),
            }
        }
    }
    for kind in ["users", "roles"] {
        let Some(list) = mentions.get(kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(list) = list_at(list, &["allowed_mentions", kind], 100, errors) else {
            continue;
        };
        if !list.is_empty() && parsed.contains(&kind) {
            errors.add(
                &["allowed_mentions"],
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                &format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
            );
        }
    }
    check_bool(
        mentions,
        "replied_user",
        &["allowed_mentions", "replied_user"],
        errors,
    );
}
