//! What the fake Discord accepts in a request body and a path: the message fields, embeds,
//! components and mentions, with Discord's limits, answered as 50035 "Invalid Form Body" with an
//! `errors` tree that names every failing field.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value, json};

use super::form::{
    FormErrors, char_len, check_bool, check_int, check_url, list_at, object_at, optional_string,
    plain, required_string,
};

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
