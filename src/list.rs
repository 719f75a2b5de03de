//! `countersign list`'s table: one approval a line, aligned, newest first. Holds no secret: the
//! views it prints are built from the store, which keeps none.

use std::time::Duration;

use crate::approval::{Kind, Usd};
use crate::config::Settings;
use crate::notify::render::clean;
use crate::store::{ApprovalView, Listing, StoreError, list_read_only};

/// What `countersign list` prints: the table (with `all`, and a line saying how far back the
/// store reaches), or the approvals as JSON.
pub fn render(
    settings: &Settings,
    all: bool,
    json: bool,
    limit: usize,
) -> Result<String, StoreError> {
    let listing = list_read_only(&settings.store.path, all, limit)?;
    if json {
        return Ok(serde_json::to_string_pretty(&listing.approvals)? + "\n");
    }
    let mut out = table(&listing.approvals);
    if all {
        out.push_str(&reach(settings.store.retention, &listing));
        out.push('\n');
    }
    Ok(out)
}

/// How far back `list --all` reaches, given `store.retention` and what was pruned.
pub fn reach(retention: Option<Duration>, listing: &Listing) -> String {
    let Some(retention) = retention else {
        return "store.retention = \"0\": every approval is kept.".into();
    };
    // "90d", as the operator wrote it, rather than "2months 29days 2h 52m 48s".
    let kept = match retention.as_secs() {
        s if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ => humantime::format_duration(retention).to_string(),
    };
    match listing.pruned_before {
        Some(t) => format!(
            "Settled approvals are kept for {kept} (store.retention): none settled before {} is listed.",
            t.format("%Y-%m-%d %H:%M UTC")
        ),
        None => format!(
            "Settled approvals are kept for {kept} (store.retention); none has been pruned yet."
        ),
    }
}

/// Per channel: `telegram:shown`, `telegram:sending`, `discord:failed`, `console:gone`.
fn delivery_state(v: &ApprovalView) -> String {
    if v.deliveries.is_empty() {
        return match v.status.as_str() {
            "rejected" => "never shown".into(),
            "verifying" => "waiting for OpenTrain".into(),
            _ => "-".into(),
        };
    }
    v.deliveries
        .iter()
        .map(|d| {
            let state = match (d.state.as_str(), d.posted, d.up_to_date) {
                ("active", true, true) => "shown",
                ("active", true, false) => "editing",
                ("active", false, _) => "sending",
                (other, _, _) => other,
            };
            format!("{}:{state}", d.channel)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn amount(v: &ApprovalView) -> String {
    v.amount
        .as_deref()
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
        .and_then(|a| Usd::from_json(&a))
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn table(views: &[ApprovalView]) -> String {
    let header = ["ID", "TYPE", "AMOUNT", "STATUS", "EXPIRES", "DELIVERY"];
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let mut status = clean(&v.status, 20);
            if let Some(reason) = &v.reason {
                status = format!("{status} ({})", clean(reason, 60));
            }
            [
                v.id.clone(),
                Kind::parse(&v.kind)
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_else(|| clean(&v.kind, 30)),
                amount(v),
                status,
                v.expires_at.clone().unwrap_or_else(|| "-".into()),
                delivery_state(v),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: [&str; 6]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(header);
    for row in &rows {
        push([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    if rows.is_empty() {
        out.push_str("(no approvals)\n");
    }
    out
}
