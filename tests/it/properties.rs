//! Outside input never panics the daemon, and outside text always arrives as text. Property tests
//! over the parsers of everything that comes from outside (hook bodies, event bodies, signature
//! headers, the config), the rendering of agent and third-party text, and the edges of the
//! listeners: arbitrary requests at the hook and its webhook route, and arbitrary exchanges
//! through the proxy.

use countersign::approval::{
    AgentContext, ApprovalId, MoneyContext, RequestedMilestone, Status, WireApproval,
};
use countersign::intake::signature;
use countersign::intake::submission::{parse_event, parse_submission};
use countersign::notify::Card;
use countersign::notify::render::{MAX_VALUE_CHARS, clean};
use countersign::notify::telegram::{html, reminder_html};
use countersign::store::ApprovalRecord;
use countersign_fakes::telegram::parse_html_message;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign::config::{ListenerLimits, SecretString, Synchronous};
use countersign::intake::{HookState, router};
use countersign::metrics::Metrics;
use countersign::proxy::Proxy;
use countersign::store::{Store, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

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

/// Text as other people write it: anything at all, or made of what links, mentions and markup are
/// made of, or one of the lures that matter.
fn outside_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[a-zA-Z0-9@.:/#?&<>\"' _-]{0,60}",
        prop_oneof![
            Just("https://app-opentrain.support/approve"),
            Just("evil.example/x"),
            Just("Review at www.opentrain-pay.com now"),
            Just("@everyone"),
            Just("billing@opentrain-pay.co"),
            Just("tg://resolve?domain=evil_bot"),
            Just("<a href=\"https://evil.example\">Approve</a>"),
            Just("10.0.0.1:8080/pay"),
        ]
        .prop_map(String::from),
    ]
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

    /// Whatever the agent and third parties on OpenTrain write, in any field, Telegram accepts
    /// the message and shows the words as written, and nothing in it links, mentions or
    /// e-mails: not through markup, nor through the links Telegram finds in plain text by itself.
    /// The only link is the approval button.
    #[test]
    fn outside_text_never_links_on_telegram(
        id in "[A-Za-z0-9_-]{1,40}",
        kind in outside_text(),
        status in prop_oneof![
            Just(Status::Pending),
            Just(Status::Confirmed),
            Just(Status::Superseded),
            outside_text().prop_map(Status::Other),
        ],
        agent in outside_text(),
        note in outside_text(),
        requested in prop::collection::vec(outside_text(), 4),
        context in prop::collection::vec(outside_text(), 8),
        evidence in (outside_text(), outside_text()),
        superseded_by in outside_text(),
    ) {
        let upstream = WireApproval {
            kind: kind.clone(),
            result: Some(json!({ evidence.0.clone(): evidence.1.clone() })),
            ..serde_json::from_value(json!({"id": id, "type": "milestone_fund"})).unwrap()
        };
        let record = ApprovalRecord {
            id: ApprovalId::parse(&id).unwrap(),
            kind: kind.clone(),
            status,
            version: 1,
            reminder_seq: 0,
            submitted: upstream.clone(),
            agent: AgentContext {
                agent: Some(agent),
                note: Some(note),
                milestone: Some(RequestedMilestone {
                    name: Some(requested[0].clone()),
                    description: Some(requested[1].clone()),
                    amount: Some(requested[2].clone()),
                    due_date: Some(requested[3].clone()),
                }),
            },
            upstream: Some(upstream),
            context: Some(MoneyContext {
                amount: Some(context[0].clone()),
                contract_title: Some(context[1].clone()),
                job_title: Some(context[2].clone()),
                milestone_name: Some(context[3].clone()),
                milestone_due: Some(context[4].clone()),
                trainer: Some(context[5].clone()),
                bid: Some(context[6].clone()),
                funded_milestones: Some(2),
                missing: Some(context[7].clone()),
            }),
            superseded_by: Some(superseded_by),
        };
        let card = Card::from_record(&record, APP, chrono::Utc::now());
        for (what, text) in [("message", html(&card)), ("reminder", reminder_html(&card))] {
            let (visible, entities) = parse_html_message(&text)
                .map_err(|e| TestCaseError::fail(format!("Telegram would refuse the {what}: {e}\n{text}")))?;
            for e in &entities {
                prop_assert!(
                    !["url", "email", "mention", "text_link", "text_mention"].contains(&e["type"].as_str().unwrap_or("")),
                    "the {} links: {} in {:?}", what, e, visible
                );
            }
            prop_assert!(visible.encode_utf16().count() <= 4096);
            if what == "message" {
                for fact in &card.facts {
                    prop_assert!(visible.contains(&fact.value), "{:?} not shown literally in {:?}", fact.value, visible);
                }
            }
        }
        // Third-party titles and names reach the card (and so the message) as written, cleaned.
        for (value, label) in [(&context[1], "Contract"), (&context[2], "Job"), (&context[5], "Trainer")] {
            let shown = clean(value, MAX_VALUE_CHARS);
            if !shown.is_empty() {
                prop_assert!(card.facts.iter().any(|f| f.label == label && f.value == shown), "{label}: {shown:?}");
            }
        }
    }
}

// ---- the listeners' edges: arbitrary requests at the hook, the webhook route and the proxy ----

const TOKEN: &str = "hook-token-fuzz";
const WEBHOOK_SECRET: &str = "whsec_fuzz";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn fuzz_runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    })
}

fn open_store(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) -> Store {
    rt.block_on(Store::open(&StoreOptions::new(
        dir.path().join("fuzz.db"),
        Synchronous::Normal,
    )))
    .unwrap()
}

/// The hook's router, without a socket, on a fresh store.
fn hook_router(store: &Store) -> axum::Router {
    router(Arc::new(HookState {
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        metrics_open: false,
        token: Some(SecretString::new(TOKEN.into())),
        webhook_secret: Some(SecretString::new(WEBHOOK_SECRET.into())),
        app_url: APP.into(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        max_body_bytes: 4096,
    }))
}

async fn stored(store: &Store) -> usize {
    store.list(None, 10_000).await.unwrap().len()
}

/// A request an agent, a scanner or an attacker might send: any method, a route or a made-up
/// path, any headers (the right token sometimes), and any body.
#[derive(Debug, Clone)]
struct Garbage {
    method: Method,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        Just(Method::from_bytes(b"PURGE").unwrap()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        json_value().prop_map(|v| serde_json::to_vec(&json!({"approval": v})).unwrap()),
    ]
}

fn garbage(paths: Vec<&'static str>) -> impl Strategy<Value = Garbage> {
    let path = prop_oneof![
        prop::sample::select(paths).prop_map(String::from),
        "/[A-Za-z0-9/._~%?=&+-]{0,40}",
    ];
    let header = (
        prop_oneof![
            Just("authorization".to_string()),
            Just("content-type".to_string()),
            Just("content-length".to_string()),
            Just("content-encoding".to_string()),
            Just("x-opentrain-signature".to_string()),
            Just("x-opentrain-delivery".to_string()),
            Just("user-agent".to_string()),
            "x-[a-z]{1,10}",
        ],
        prop_oneof![
            Just(format!("Bearer {TOKEN}").into_bytes()),
            Just(b"application/json".to_vec()),
            prop::collection::vec(any::<u8>(), 0..60),
        ],
    );
    (method(), path, prop::collection::vec(header, 0..6), body()).prop_map(
        |(method, path, headers, body)| Garbage {
            method,
            path,
            headers,
            body,
        },
    )
}

impl Garbage {
    /// As an HTTP request; headers that are not valid HTTP are left out (no client can send them).
    fn request(&self) -> axum::http::Request<axum::body::Body> {
        let mut request = axum::http::Request::builder()
            .method(self.method.clone())
            .uri(&self.path);
        for (name, value) in &self.headers {
            if let Ok(value) = axum::http::HeaderValue::from_bytes(value) {
                request = request.header(name.as_str(), value);
            }
        }
        request
            .body(axum::body::Body::from(self.body.clone()))
            .unwrap()
    }
}

/// Whatever arrives, the hook answers without panicking, with a 4xx (never a 5xx) for what it
/// cannot take, in its JSON error shape, and stores nothing unless it answered 2xx.
#[test]
fn the_hook_answers_garbage_with_a_4xx_and_stores_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&rt, &dir);
    let router = hook_router(&store);
    let paths = vec![
        "/v1/approvals",
        "/v1/approvals?status=pending&limit=x",
        "/v1/approvals/apr_1",
        "/v1/approvals/%FF%FE",
        "/v1/events",
        "/v1/opentrain/webhook",
        "/healthz",
        "/metrics",
    ];
    fuzz_runner(512)
        .run(&garbage(paths), |garbage| {
            rt.block_on(async {
                let before = stored(&store).await;
                let response = router.clone().oneshot(garbage.request()).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                prop_assert!(!status.is_server_error(), "{status}: {bytes:?}");
                if !status.is_success() {
                    prop_assert_eq!(stored(&store).await, before, "stored on a {}", status);
                }
                if status.is_client_error() && garbage.method != Method::HEAD {
                    let error: Value = serde_json::from_slice(&bytes).map_err(|_| {
                        TestCaseError::fail(format!("{status} is not JSON: {bytes:?}"))
                    })?;
                    prop_assert!(
                        error["error"].is_string() && error["message"].is_string(),
                        "{status}: {error}"
                    );
                }
                Ok(())
            })
        })
        .unwrap();
}

/// The webhook route takes only deliveries signed with the secret, within the tolerance: any
/// other body or signature is a 400 (413 when too large), never a 5xx, and nothing a delivery
/// says is ever stored as an approval.
#[test]
fn the_webhook_route_refuses_what_is_not_signed_and_stores_no_approval() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&rt, &dir);
    let router = hook_router(&store);
    let signature = prop_oneof![
        Just(None),
        ".{0,120}".prop_map(Some),
        Just(Some("t=1,v1=00".to_string())),
    ];
    let strategy = (
        body(),
        signature,
        prop_oneof![Just(0i64), Just(-301), Just(301), -5i64..5],
        any::<bool>(),
    );
    fuzz_runner(256)
        .run(&strategy, |(body, signature, skew, signed)| {
            rt.block_on(async {
                let now = chrono::Utc::now().timestamp();
                let header = if signed {
                    Some(signature::sign(
                        WEBHOOK_SECRET.as_bytes(),
                        now + skew,
                        &body,
                    ))
                } else {
                    signature
                };
                let mut request = axum::http::Request::post("/v1/opentrain/webhook");
                if let Some(h) = &header
                    && let Ok(v) = axum::http::HeaderValue::from_str(h)
                {
                    request = request.header("x-opentrain-signature", v);
                }
                let request = request.body(axum::body::Body::from(body.clone())).unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let valid = signed && skew.abs() <= 300 && body.len() <= 4096;
                let expected = if valid {
                    200
                } else if body.len() > 4096 {
                    413
                } else {
                    400
                };
                prop_assert_eq!(status, expected, "signed {} skew {}", signed, skew);
                prop_assert_eq!(stored(&store).await, 0);
                Ok(())
            })
        })
        .unwrap();
}

/// What the test's OpenTrain answers next: status, whether JSON, whether gzip-labelled, body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    json: bool,
    encoded: bool,
    body: Vec<u8>,
}

/// An upstream that answers every request with the [`Answer`] it is given.
async fn scripted_upstream(answer: Arc<Mutex<Option<Answer>>>) -> String {
    let app = axum::Router::new().fallback(move || {
        let answer = answer.lock().unwrap().clone().expect("an answer is set");
        async move {
            let mut response = axum::response::Response::new(axum::body::Body::from(answer.body));
            *response.status_mut() = axum::http::StatusCode::from_u16(answer.status).unwrap();
            let headers = response.headers_mut();
            if answer.json {
                headers.insert("content-type", "application/json".parse().unwrap());
            }
            if answer.encoded {
                headers.insert("content-encoding", "gzip".parse().unwrap());
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// Whatever an agent sends through the proxy and whatever comes back, the agent gets OpenTrain's
/// status and bytes unchanged (the proxy adds no 5xx of its own), and an approval is taken in only
/// from a 202 JSON answer that intake accepts.
#[test]
fn the_proxys_capture_path_passes_any_exchange_through_and_takes_in_only_valid_approvals() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&rt, &dir);
    let answer = Arc::new(Mutex::new(None));
    let origin = rt.block_on(scripted_upstream(answer.clone()));
    let client = reqwest::Client::new();
    // Now and then the real thing: a 202 body with an approval intake accepts.
    let approval = "[a-z0-9]{1,12}".prop_map(|n| {
        serde_json::to_vec(&json!({"approval": {
            "id": format!("apr_{n}"),
            "type": "milestone_fund",
            "approvalUrl": format!("{APP}/approvals/apr_{n}"),
        }, "message": "needs the owner's approval"}))
        .unwrap()
    });
    let upstream_answer = (
        prop_oneof![Just(202u16), Just(200), Just(400)],
        any::<bool>(),
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![3 => body(), 1 => approval],
    )
        .prop_map(|(status, json, encoded, body)| Answer {
            status,
            json,
            encoded,
            body,
        });
    let request = garbage(vec![
        "/proposals/p1/hire",
        "/api/public/v1/proposals/p1/hire",
        "/updates",
        "/milestones/m1/fund",
    ]);
    fuzz_runner(128)
        .run(&(request, upstream_answer), |(garbage, next)| {
            *answer.lock().unwrap() = Some(next.clone());
            rt.block_on(async {
                let before = stored(&store).await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let proxy_url = format!("http://{}", listener.local_addr().unwrap());
                let proxy = Arc::new(Proxy {
                    store: store.clone(),
                    app_url: APP.into(),
                    origin: origin.parse().unwrap(),
                    limits: ListenerLimits {
                        read_timeout: Duration::from_secs(10),
                        max_connections: 16,
                    },
                });
                let stop = CancellationToken::new();
                let serving = tokio::spawn(proxy.serve(listener, stop.clone()));

                let mut request = client
                    .request(
                        garbage.method.clone(),
                        format!("{proxy_url}{}", garbage.path),
                    )
                    .body(garbage.body.clone());
                for (name, value) in &garbage.headers {
                    // Framing is the client's to set; a made-up length would only break the test.
                    if name == "content-length" {
                        continue;
                    }
                    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
                        request = request.header(name.as_str(), value);
                    }
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap();
                prop_assert_eq!(status, next.status);
                if garbage.method != Method::HEAD {
                    prop_assert_eq!(&bytes[..], &next.body[..]);
                }

                // Stopping the proxy waits for its intake tasks: whatever it takes in is stored.
                stop.cancel();
                serving.await.unwrap().unwrap();
                let readable = next.status == 202 && next.json && !next.encoded;
                let holds_approval = serde_json::from_slice::<Value>(&next.body)
                    .is_ok_and(|v| v["approval"].is_object());
                let accepted = parse_submission(&next.body, APP)
                    .ok()
                    .filter(|_| readable && garbage.method != Method::HEAD && holds_approval);
                match accepted {
                    Some(submission) => prop_assert!(
                        store.get(&submission.id).await.unwrap().is_some(),
                        "an acceptable approval was not taken in: {:?}",
                        String::from_utf8_lossy(&next.body)
                    ),
                    None => {
                        prop_assert_eq!(stored(&store).await, before, "took in {:?}", next)
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}
