//! Parsing what an agent hands over. Pure: bytes in, a validated submission or a rejection out,
//! so it can be tested (and fuzzed) without a server. Nothing here trusts the agent: the
//! approval will be read back from OpenTrain before anything is shown, and the link shown is
//! always built from the app URL and the id, never taken from the body.

use serde_json::{Map, Value};

use crate::approval::{
    AgentContext, ApprovalId, Kind, RequestedMilestone, Usd, WireApproval, parse_time,
};
use crate::text::cut;

/// Longest agent name and note kept (more is cut, not refused: the message cuts further).
const MAX_AGENT_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 4000;
const MAX_FIELD_CHARS: usize = 1000;

/// Why a body is refused: `Malformed` is a 400, `Unacceptable` a 422 with a stable code.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    Malformed(String),
    Unacceptable { code: &'static str, message: String },
}

fn unacceptable(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection::Unacceptable {
        code,
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub id: ApprovalId,
    pub kind: Kind,
    pub approval: WireApproval,
    pub context: AgentContext,
}

/// Parses `POST /v1/approvals`: the OpenTrain 202 body `{"approval": {...}, "message": ...}` or
/// the bare approval object, with optional top-level `agent` and `context`.
pub fn parse_submission(body: &[u8], app_url: &str) -> Result<Submission, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(unacceptable(
            "not_an_object",
            "the body must be a JSON object: OpenTrain's 202 body or the approval itself",
        ));
    };
    let approval = match top.get("approval") {
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err(unacceptable(
                "invalid_approval",
                "`approval` must be an object",
            ));
        }
        None if top.contains_key("id") && top.contains_key("type") => top.clone(),
        None if top.get("ok") == Some(&Value::Bool(true)) => {
            return Err(unacceptable(
                "no_approval",
                "this body holds no approval: OpenTrain carried out the request directly \
                 (a 200 answer), so there is nothing for the owner to sign",
            ));
        }
        None => {
            return Err(unacceptable(
                "no_approval",
                "the body holds no approval: send OpenTrain's 202 body as it came, or the approval object",
            ));
        }
    };

    let wire: WireApproval = serde_json::from_value(Value::Object(approval)).map_err(|e| {
        unacceptable(
            "invalid_approval",
            format!("the approval is not valid: {e}"),
        )
    })?;
    let id = ApprovalId::parse(&wire.id).map_err(|e| unacceptable("invalid_id", e))?;
    let kind = Kind::parse(&wire.kind).ok_or_else(|| {
        unacceptable(
            "unknown_type",
            format!(
                "unknown approval type {:?}: countersign knows proposal_hire, milestone_fund, \
                 milestone_approve and contract_end",
                cut(&wire.kind, 64)
            ),
        )
    })?;
    if let Some(url) = &wire.approval_url {
        let expected = format!("{app_url}/approvals/{id}");
        if url != &expected {
            return Err(unacceptable(
                "bad_approval_url",
                format!(
                    "approvalUrl must be {expected:?} (OpenTrain's app, this approval's id); got {:?}",
                    cut(url, 200)
                ),
            ));
        }
    }
    for (name, value) in [
        ("expiresAt", &wire.expires_at),
        ("createdAt", &wire.created_at),
        ("resolvedAt", &wire.resolved_at),
    ] {
        if let Some(v) = value
            && parse_time(v).is_none()
        {
            return Err(unacceptable(
                "invalid_approval",
                format!("{name} is not an RFC 3339 time: {:?}", cut(v, 64)),
            ));
        }
    }

    let context = parse_context(&top)?;
    Ok(Submission {
        id,
        kind,
        approval: wire,
        context,
    })
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
) -> Result<Option<String>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(cut(s, max))),
        Some(_) => Err(unacceptable(
            "invalid_context",
            format!("{path} must be a string"),
        )),
    }
}

/// The agent's name and its context: a free-text note and, for hires, the milestone terms it
/// requested (only the agent knows them).
fn parse_context(top: &Map<String, Value>) -> Result<AgentContext, Rejection> {
    let agent = optional_string(top, "agent", "agent", MAX_AGENT_CHARS)?;
    let mut ctx = AgentContext {
        agent,
        ..AgentContext::default()
    };
    let context = match top.get("context") {
        None | Some(Value::Null) => return Ok(ctx),
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(unacceptable("invalid_context", "context must be an object"));
        }
    };
    ctx.note = optional_string(context, "note", "context.note", MAX_NOTE_CHARS)?;
    match context.get("milestone") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let amount = match m.get("amount") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let usd = Usd::from_json(v).ok_or_else(|| {
                        unacceptable(
                            "invalid_context",
                            "context.milestone.amount must be a number of US dollars",
                        )
                    })?;
                    if usd.is_negative() {
                        return Err(unacceptable(
                            "invalid_context",
                            "context.milestone.amount must not be negative",
                        ));
                    }
                    Some(usd.as_decimal().to_string())
                }
            };
            ctx.milestone = Some(RequestedMilestone {
                name: optional_string(m, "name", "context.milestone.name", MAX_FIELD_CHARS)?,
                description: optional_string(
                    m,
                    "description",
                    "context.milestone.description",
                    MAX_FIELD_CHARS,
                )?,
                amount,
                due_date: optional_string(m, "dueDate", "context.milestone.dueDate", 64)?,
            });
        }
        Some(_) => {
            return Err(unacceptable(
                "invalid_context",
                "context.milestone must be an object",
            ));
        }
    }
    Ok(ctx)
}

/// Parses `POST /v1/events`: one OpenTrain event record. Returns the approval whose doorbell it
/// rings, if it is an `approval.confirmed` event (any other event is accepted and ignored).
pub fn parse_event(body: &[u8]) -> Result<Option<ApprovalId>, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(event) = value else {
        return Err(unacceptable(
            "not_an_event",
            "the body must be one OpenTrain event record (a JSON object)",
        ));
    };
    let Some(kind) = event.get("type").and_then(Value::as_str) else {
        return Err(unacceptable(
            "not_an_event",
            "the event has no string `type`",
        ));
    };
    if kind != "approval.confirmed" {
        return Ok(None);
    }
    let id = event
        .get("data")
        .and_then(|d| d.get("approvalId"))
        .or_else(|| event.get("resourceId"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            unacceptable(
                "not_an_event",
                "an approval.confirmed event needs data.approvalId (or resourceId)",
            )
        })?;
    ApprovalId::parse(id)
        .map(Some)
        .map_err(|e| unacceptable("invalid_id", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "https://app.opentrain.ai";

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn approval(id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id, "type": "milestone_fund", "status": "pending",
            "approvalUrl": format!("{APP}/approvals/{id}"),
            "expiresAt": "2026-06-15T10:00:00.000Z"
        })
    }

    #[test]
    fn accepts_the_202_body_and_the_bare_approval() {
        let wrapped = body(serde_json::json!({"approval": approval("apr_1"), "message": "m"}));
        assert_eq!(
            parse_submission(&wrapped, APP).unwrap().id.as_str(),
            "apr_1"
        );
        let bare = body(approval("apr_2"));
        assert_eq!(
            parse_submission(&bare, APP).unwrap().kind,
            Kind::MilestoneFund
        );
    }

    #[test]
    fn refuses_a_link_to_another_host_or_another_id() {
        for url in [
            "https://evil.example/approvals/apr_1",
            "https://app.opentrain.ai/approvals/apr_2",
            "https://app.opentrain.ai.evil.example/approvals/apr_1",
            "https://app.opentrain.ai/approvals/apr_1?x=1",
        ] {
            let mut a = approval("apr_1");
            a["approvalUrl"] = url.into();
            let r = parse_submission(&body(a), APP).unwrap_err();
            assert!(
                matches!(
                    r,
                    Rejection::Unacceptable {
                        code: "bad_approval_url",
                        ..
                    }
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn classifies_bad_bodies() {
        assert!(matches!(
            parse_submission(b"{", APP),
            Err(Rejection::Malformed(_))
        ));
        let ok200 = body(serde_json::json!({"ok": true, "contractId": "c", "status": "ended"}));
        assert!(matches!(
            parse_submission(&ok200, APP),
            Err(Rejection::Unacceptable {
                code: "no_approval",
                ..
            })
        ));
        let mut unknown = approval("apr_1");
        unknown["type"] = "withdraw_everything".into();
        assert!(matches!(
            parse_submission(&body(unknown), APP),
            Err(Rejection::Unacceptable {
                code: "unknown_type",
                ..
            })
        ));
        let mut bad_id = approval("apr_1");
        bad_id["id"] = "../../x".into();
        bad_id["approvalUrl"] = serde_json::Value::Null;
        assert!(matches!(
            parse_submission(&body(bad_id), APP),
            Err(Rejection::Unacceptable {
                code: "invalid_id",
                ..
            })
        ));
    }

    #[test]
    fn reads_the_agent_and_its_hire_terms() {
        let b = body(serde_json::json!({
            "approval": approval("apr_1"), "agent": "scout",
            "context": {"note": "first batch", "milestone": {"name": "M1", "amount": 450, "dueDate": "2026-07-01"}}
        }));
        let s = parse_submission(&b, APP).unwrap();
        assert_eq!(s.context.agent.as_deref(), Some("scout"));
        assert_eq!(s.context.milestone.unwrap().amount.as_deref(), Some("450"));
        let bad = body(
            serde_json::json!({"approval": approval("apr_1"), "context": {"milestone": {"amount": "lots"}}}),
        );
        assert!(matches!(
            parse_submission(&bad, APP),
            Err(Rejection::Unacceptable {
                code: "invalid_context",
                ..
            })
        ));
    }

    #[test]
    fn events_ring_only_for_approvals() {
        let e = body(
            serde_json::json!({"id": "1", "type": "approval.confirmed", "data": {"approvalId": "apr_9", "status": "declined"}}),
        );
        assert_eq!(parse_event(&e).unwrap().unwrap().as_str(), "apr_9");
        let other = body(serde_json::json!({"id": "2", "type": "proposal.received", "data": {}}));
        assert_eq!(parse_event(&other).unwrap(), None);
        assert!(parse_event(b"[]").is_err());
    }
}
