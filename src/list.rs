//! `countersign list`'s table: one approval a line, aligned, newest first. Holds no secret: the
//! views it prints are built from the store, which keeps none.

use crate::approval::{Kind, Usd};
use crate::notify::render::clean;
use crate::store::ApprovalView;

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
