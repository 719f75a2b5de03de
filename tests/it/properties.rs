//! Outside input never panics the daemon, and agent text always arrives as text. Property tests
//! over the parsers of everything that comes from outside: hook bodies, event bodies, signature
//! headers, the config, and the rendering of agent-supplied text.

use countersign::approval::{AgentContext, ApprovalId, RequestedMilestone, Status};
use countersign::intake::signature;
use countersign::intake::submission::{parse_event, parse_submission};
use countersign::notify::Card;
use countersign::notify::render::clean;
use countersign::notify::telegram::html;
use countersign::store::ApprovalRecord;
use proptest::prelude::*;
use serde_json::{Value, json};

const APP: &str = "https://app.opentrain.ai";

/// Arbitrary JSON, biased towards the shapes the parsers look at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("milestone_fund"),
            Just("proposal_hire"),
            Just("apr_1"),
            Just("https://app.opentrain.ai/approvals/apr_1"),
            Just("2026-06-15T10:00:00.000Z"),
            Just("approval.confirmed"),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("approval".to_string()),
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("approvalUrl".to_string()),
                    Just("expiresAt".to_string()),
                    Just("agent".to_string()),
                    Just("context".to_string()),
                    Just("note".to_string()),
                    Just("milestone".to_string()),
                    Just("amount".to_string()),
                    Just("data".to_string()),
                    Just("approvalId".to_string()),
                    Just("ok".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hook_body_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_submission(&bytes, APP);
        let _ = parse_event(&bytes);
    }

    #[test]
    fn hook_body_parser_never_panics_on_json(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(s) = parse_submission(&bytes, APP) {
            // Whatever it accepts has a safe id and, if any, the only acceptable link.
            prop_assert!(s.id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            if let Some(url) = &s.approval.approval_url {
                prop_assert_eq!(url, &format!("{APP}/approvals/{}", s.id));
            }
        }
        let _ = parse_event(&bytes);
    }

    #[test]
    fn signature_header_parser_never_panics(header in ".{0,200}", body in prop::collection::vec(any::<u8>(), 0..64), now in any::<i64>()) {
        let _ = signature::parse(&header);
        let _ = signature::verify(&[b"whsec_x"], Some(&header), &body, now);
    }

    #[test]
    fn only_the_right_signature_verifies(t in 0i64..4_000_000_000, body in prop::collection::vec(any::<u8>(), 0..64), flip in 0usize..64) {
        let header = signature::sign(b"whsec_x", t, &body);
        prop_assert!(signature::verify(&[b"whsec_x"], Some(&header), &body, t).is_ok());
        // Any single changed hex digit of the signature is refused.
        let mut bad = header.clone().into_bytes();
        let i = header.find("v1=").unwrap() + 3 + flip;
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        prop_assert!(signature::verify(&[b"whsec_x"], Some(&bad), &body, t).is_err());
    }

    #[test]
    fn config_loader_never_panics(text in ".{0,300}") {
        let _ = countersign::Settings::from_toml_and_env(Some(&text), Default::default());
    }

    #[test]
    fn config_loader_never_panics_on_plausible_toml(
        section in prop_oneof![Just("hook"), Just("opentrain"), Just("telegram"), Just("discord"), Just("store"), Just("reminders"), Just("log"), Just("proxy"), Just("console")],
        key in prop_oneof![Just("token"), Just("listen"), Just("chat_id"), Just("user_id"), Just("api_url"), Just("before_expiry"), Just("poll_interval_secs"), Just("max_body_bytes"), Just("path"), Just("enabled"), Just("format")],
        value in prop_oneof![".{0,20}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|n| n.to_string()), Just("[\"1h\", \"x\"]".to_string()), Just("true".to_string())],
    ) {
        let text = format!("[hook]\ntoken = \"t\"\n[{section}]\n{key} = {value}\n");
        let _ = countersign::Settings::from_toml_and_env(Some(&text), Default::default());
    }

    /// Whatever the agent writes, Telegram parses the message and shows the words as written:
    /// no tag, entity or link of the agent's survives as markup.
    #[test]
    fn agent_text_always_arrives_as_text_on_telegram(agent in ".{0,60}", note in ".{0,300}", name in ".{0,60}") {
        let wire = serde_json::from_value(json!({"id": "apr_1", "type": "proposal_hire"})).unwrap();
        let record = ApprovalRecord {
            id: ApprovalId::parse("apr_1").unwrap(),
            kind: "proposal_hire".into(),
            status: Status::Pending,
            version: 1,
            reminder_seq: 0,
            submitted: wire,
            agent: AgentContext {
                agent: Some(agent.clone()),
                note: Some(note.clone()),
                milestone: Some(RequestedMilestone { name: Some(name.clone()), amount: Some("12.5".into()), ..Default::default() }),
            },
            upstream: None,
            context: None,
            superseded_by: None,
        };
        let card = Card::from_record(&record, APP, chrono::Utc::now());
        let text = html(&card);
        let (visible, entities) = countersign_fakes::telegram::parse_html(&text)
            .map_err(|e| TestCaseError::fail(format!("Telegram would refuse it: {e}\n{text}")))?;
        for (value, max) in [(&agent, 100), (&note, 800), (&name, 300)] {
            let shown = clean(value, max);
            prop_assert!(visible.contains(shown.trim()), "{shown:?} not shown literally in {visible:?}");
        }
        for e in &entities {
            prop_assert!(e["type"] != "text_link", "a link entity: {e}");
        }
        prop_assert!(visible.encode_utf16().count() <= 4096);
    }
}
