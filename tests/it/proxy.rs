//! Proxy mode (SPEC §3.5): an unmodified HTTP client pointed at the proxy gets OpenTrain's
//! answers byte for byte, and every approval it is handed reaches the owner exactly once.

use std::collections::HashMap;
use std::time::Duration;

use countersign::{App, Settings};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The agent's own OpenTrain token, distinct from countersign's (the fake refuses it with 401).
const AGENT_TOKEN: &str = "ot_pat_agent_0123456789-AGENTTOKEN-x9";
const AGENT_UA: &str = "opentrain-cli/0.2.1 (node 22)";

/// What a client got: status, content type, body bytes, and all headers.
struct Got {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    headers: reqwest::header::HeaderMap,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

fn base(app: &TestApp) -> String {
    app.proxy.clone().expect("proxy mode is on")
}

async fn proxy_app() -> TestApp {
    spawn_app_with(Options {
        proxy: true,
        ..Options::default()
    })
    .await
}

/// A proxy app whose own `/updates` poll has run once and will not run again during the test,
/// so every request the fake sees is the agent's (and a scripted fault is the agent's to get).
async fn quiet_proxy_app() -> TestApp {
    let app = spawn_app_with(Options {
        proxy: true,
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    eventually("countersign's first /updates poll", || async {
        (app.opentrain.count("GET", "/api/public/v1/updates") >= 1).then_some(())
    })
    .await;
    app
}

/// The agent's requests as OpenTrain received them (countersign's own reads left out).
fn agent_requests(app: &TestApp) -> Vec<countersign_fakes::opentrain::RecordedRequest> {
    app.opentrain
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() == Some(AGENT_UA))
        .collect()
}

/// A plain client, as an agent's tool would be: no special settings but its own User-Agent.
fn agent_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(AGENT_UA)
        .build()
        .unwrap()
}

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Got {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().await.expect("the whole body").to_vec();
    Got {
        status,
        content_type,
        body,
        headers,
    }
}

/// Asserts the client got exactly what the fake OpenTrain last sent for `method path`.
fn assert_same_as_sent(app: &TestApp, what: &str, method: &str, path: &str, got: &Got) {
    let sent = app
        .opentrain
        .answers()
        .into_iter()
        .rfind(|a| a.method == method && a.path == path)
        .unwrap_or_else(|| panic!("{what}: OpenTrain answered nothing to {method} {path}"));
    assert_eq!(got.status, sent.status, "{what}: status");
    assert_eq!(
        got.content_type.as_deref(),
        sent.header("content-type"),
        "{what}: content type"
    );
    assert!(
        got.body == sent.body,
        "{what}: body differs ({} bytes got, {} sent)",
        got.body.len(),
        sent.body.len()
    );
}

fn assert_same(what: &str, direct: &Got, proxied: &Got) {
    assert_eq!(direct.status, proxied.status, "{what}: status");
    assert_eq!(direct.content_type, proxied.content_type, "{what}: type");
    assert!(direct.body == proxied.body, "{what}: body differs");
}

/// A request through the proxy and the status OpenTrain answers it with:
/// `(what, method, path, token, body, status)`.
type Case = (
    &'static str,
    Method,
    &'static str,
    Option<&'static str>,
    Option<(&'static str, Vec<u8>)>,
    u16,
);

fn labeling_contract(app: &TestApp) {
    app.opentrain.add_simple_contract(
        "ctr_1",
        "Spanish Sentiment Labeling Contract",
        "Maria G.",
        &[
            ("ms_1", "First labeling batch", 450.0, "NOT_FUNDED"),
            ("ms_2", "Second labeling batch", 150.5, "ACTIVE_FUNDED"),
        ],
    );
}

/// Waits until the approval is tracked, and returns its view.
async fn tracked(app: &TestApp, id: &str) -> Value {
    eventually(&format!("{id} is tracked"), || async {
        let (status, view) = app.get(&format!("/v1/approvals/{id}")).await;
        (status == 200).then_some(view)
    })
    .await
}

async fn tracked_count(app: &TestApp) -> usize {
    let (status, list) = app.get("/v1/approvals").await;
    assert_eq!(status, 200, "{list}");
    list["approvals"].as_array().unwrap().len()
}

/// The app once everything the agent's requests so far could cause has happened. The proxy takes
/// an answer in after the agent has it, in a task of its own; stopping waits for those tasks, and
/// the new process finishes whatever they left due. Assert what the proxy did *not* do after this.
async fn taken_in(app: TestApp) -> TestApp {
    let app = app.restart().await;
    no_due_work(&app).await;
    app
}

#[tokio::test]
async fn get_and_post_answers_are_byte_identical_through_the_proxy() {
    let app = quiet_proxy_app().await;
    labeling_contract(&app);
    app.opentrain
        .add_simple_proposal("prp_1", "Spanish Sentiment Labeling", "Maria G.");
    let client = agent_client();
    let p = base(&app);
    let o = app.opentrain.api_url();

    // A deterministic read: direct and proxied answers are the same bytes.
    let url = "/contracts/ctr_1";
    let direct = send(
        &client,
        Method::GET,
        &format!("{o}{url}"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let proxied = send(
        &client,
        Method::GET,
        &format!("{p}/api/public/v1{url}"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(proxied.status, 200);
    assert_same("GET contract", &direct, &proxied);
    assert_same_as_sent(
        &app,
        "GET contract",
        "GET",
        "/api/public/v1/contracts/ctr_1",
        &proxied,
    );

    // Error envelopes carry a fresh requestId each time: compare with what OpenTrain sent.
    let cases: Vec<Case> = vec![
        (
            "404 envelope",
            Method::GET,
            "/api/public/v1/approvals/apr_nope",
            Some(OT_TOKEN),
            None,
            404,
        ),
        (
            "401 for the agent's own token",
            Method::GET,
            "/api/public/v1/auth/me",
            Some(AGENT_TOKEN),
            None,
            401,
        ),
        (
            "401 without a token",
            Method::GET,
            "/api/public/v1/updates",
            None,
            None,
            401,
        ),
        (
            "POST 404",
            Method::POST,
            "/api/public/v1/milestones/ms_nope/fund",
            Some(OT_TOKEN),
            None,
            404,
        ),
        (
            "POST 409",
            Method::POST,
            "/api/public/v1/milestones/ms_2/fund",
            Some(OT_TOKEN),
            None,
            409,
        ),
        (
            "POST 400 on a bad hire body",
            Method::POST,
            "/api/public/v1/proposals/prp_1/hire",
            Some(OT_TOKEN),
            Some((
                "application/json",
                br#"{"milestone": {"amount": 5}}"#.to_vec(),
            )),
            400,
        ),
        (
            "unknown route",
            Method::DELETE,
            "/api/public/v1/nothing/here",
            Some(OT_TOKEN),
            None,
            404,
        ),
    ];
    for (what, method, path, token, body, status) in cases {
        let m = method.to_string();
        let got = send(&client, method, &format!("{p}{path}"), token, body).await;
        assert_eq!(
            got.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_same_as_sent(&app, what, &m, path, &got);
    }

    // Non-JSON and large bodies stream through untouched.
    let mut csv = b"id,label\n1,positivo\n2,negativo\n".to_vec();
    csv.extend_from_slice(&[0xff, 0x00, 0xfe, b'\n']);
    app.opentrain.serve_raw(
        "GET",
        "/api/public/v1/exports/labels.csv",
        200,
        "text/csv; charset=utf-8",
        csv.clone(),
    );
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    app.opentrain.serve_raw(
        "GET",
        "/api/public/v1/exports/big.bin",
        200,
        "application/octet-stream",
        big.clone(),
    );
    let big_json = format!("{{\"items\": [{}]}}", vec!["\"x\""; 200_000].join(","));
    app.opentrain.serve_raw(
        "GET",
        "/api/public/v1/exports/big.json",
        200,
        "application/json",
        big_json.clone(),
    );
    for (path, expected) in [
        ("/exports/labels.csv", csv),
        ("/exports/big.bin", big),
        ("/exports/big.json", big_json.into_bytes()),
    ] {
        let direct = send(
            &client,
            Method::GET,
            &format!("{o}{path}"),
            Some(OT_TOKEN),
            None,
        )
        .await;
        let proxied = send(
            &client,
            Method::GET,
            &format!("{p}{path}"),
            Some(OT_TOKEN),
            None,
        )
        .await;
        assert_eq!(proxied.status, 200, "{path}");
        assert!(proxied.body == expected, "{path}: body differs");
        assert_same(path, &direct, &proxied);
    }

    // A request body goes to OpenTrain as the same bytes, large or not.
    app.opentrain.serve_raw(
        "POST",
        "/api/public/v1/uploads",
        201,
        "application/json",
        br#"{"ok":true}"#.to_vec(),
    );
    let upload: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
    let got = send(
        &client,
        Method::POST,
        &format!("{p}/uploads"),
        Some(OT_TOKEN),
        Some(("application/octet-stream", upload.clone())),
    )
    .await;
    assert_eq!(got.status, 201);
    assert_same_as_sent(&app, "upload", "POST", "/api/public/v1/uploads", &got);
    let received = agent_requests(&app).pop().unwrap();
    assert!(
        received.raw_body == upload,
        "the upload was changed on the way"
    );
    assert_eq!(received.user_agent.as_deref(), Some(AGENT_UA));

    // OpenTrain's own failures pass through as it sent them, headers included.
    app.opentrain.fail_next(1, 429, Some(7));
    let limited = send(
        &client,
        Method::GET,
        &format!("{p}/updates"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers.get("retry-after").unwrap(), "7");
    assert_same_as_sent(&app, "429", "GET", "/api/public/v1/updates", &limited);
    app.opentrain.set_down(true);
    let down = send(
        &client,
        Method::POST,
        &format!("{p}/milestones/ms_1/fund"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(down.status, 503);
    assert_same_as_sent(
        &app,
        "503 while down",
        "POST",
        "/api/public/v1/milestones/ms_1/fund",
        &down,
    );
    app.opentrain.set_down(false);

    let app = taken_in(app).await;
    assert_eq!(tracked_count(&app).await, 0, "an error answer was taken in");
    assert!(app.telegram.messages(CHAT).is_empty());
}

#[tokio::test]
async fn both_base_shapes_reach_opentrains_real_paths() {
    let app = proxy_app().await;
    labeling_contract(&app);
    let client = agent_client();
    let p = base(&app);

    let long = send(
        &client,
        Method::GET,
        &format!("{p}/api/public/v1/contracts/ctr_1"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let short = send(
        &client,
        Method::GET,
        &format!("{p}/contracts/ctr_1"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(long.status, 200);
    assert_same("the two shapes", &long, &short);
    let updates = send(
        &client,
        Method::GET,
        &format!("{p}/updates?limit=2"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(updates.status, 200);
    assert_eq!(updates.json()["events"], json!([]));

    let seen: Vec<(String, Option<String>)> = agent_requests(&app)
        .into_iter()
        .map(|r| (r.path, r.query))
        .collect();
    assert_eq!(
        seen,
        [
            ("/api/public/v1/contracts/ctr_1".to_string(), None),
            ("/api/public/v1/contracts/ctr_1".to_string(), None),
            (
                "/api/public/v1/updates".to_string(),
                Some("limit=2".to_string())
            ),
        ]
    );
}

#[tokio::test]
async fn headers_pass_through_except_hop_by_hop_ones_and_host_is_the_origins() {
    let app = quiet_proxy_app().await;
    labeling_contract(&app);
    let client = agent_client();
    let p = base(&app);
    let origin_host = app
        .opentrain
        .origin()
        .trim_start_matches("http://")
        .to_string();

    let read = client
        .get(format!("{p}/contracts/ctr_1"))
        .bearer_auth(OT_TOKEN)
        .header("x-request-tag", "t1")
        .header("accept-language", "es")
        .header("accept-encoding", "gzip")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let seen = agent_requests(&app).pop().unwrap();
    assert_eq!(seen.header("x-request-tag"), Some("t1"));
    assert_eq!(seen.header("accept-language"), Some("es"));
    assert_eq!(
        seen.header("accept-encoding"),
        Some("gzip"),
        "a read keeps its encodings"
    );
    assert_eq!(
        seen.header("x-hop"),
        None,
        "a header named in Connection went through"
    );
    assert_eq!(seen.header("host"), Some(origin_host.as_str()));
    assert_eq!(
        seen.authorization.as_deref(),
        Some(&*format!("Bearer {OT_TOKEN}"))
    );

    // A write's answer may be read, so it is asked for uncompressed.
    let write = client
        .post(format!("{p}/milestones/ms_1/fund"))
        .bearer_auth(OT_TOKEN)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 202);
    let seen = agent_requests(&app).pop().unwrap();
    assert_eq!(seen.header("accept-encoding"), Some("identity"));

    // HEAD: same status and length as asking OpenTrain directly, and no body.
    let head = |url: String| {
        let client = client.clone();
        async move {
            let r = client.head(url).bearer_auth(OT_TOKEN).send().await.unwrap();
            let len = r.headers().get("content-length").cloned();
            (r.status(), len, r.bytes().await.unwrap().len())
        }
    };
    let direct = head(format!("{}/contracts/ctr_1", app.opentrain.api_url())).await;
    let proxied = head(format!("{p}/contracts/ctr_1")).await;
    assert_eq!(direct, proxied);
    assert_eq!(proxied.2, 0);
}

#[tokio::test]
async fn a_fund_an_approve_a_hire_and_a_contract_end_each_post_exactly_one_message() {
    let app = proxy_app().await;
    labeling_contract(&app);
    app.opentrain.add_simple_proposal(
        "prp_1",
        "Spanish Sentiment Labeling — Social Media",
        "Maria G.",
    );
    let client = agent_client();
    let p = base(&app);

    let fund = send(
        &client,
        Method::POST,
        &format!("{p}/api/public/v1/milestones/ms_1/fund"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let approve = send(
        &client,
        Method::POST,
        &format!("{p}/api/public/v1/milestones/ms_2/approve"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let terms = br#"{"milestone": {"name": "Pilot batch", "description": "500 posts", "amount": 300, "dueDate": "2026-07-01"}}"#;
    let hire = send(
        &client,
        Method::POST,
        &format!("{p}/proposals/prp_1/hire"),
        Some(OT_TOKEN),
        Some(("application/json", terms.to_vec())),
    )
    .await;
    let hire_request = agent_requests(&app).pop().unwrap();
    assert!(
        hire_request.raw_body == terms,
        "the hire body was changed on the way"
    );
    let end = send(
        &client,
        Method::POST,
        &format!("{p}/contracts/ctr_1/end"),
        Some(OT_TOKEN),
        None,
    )
    .await;

    let mut ids = Vec::new();
    for (what, got, kind) in [
        ("fund", &fund, "milestone_fund"),
        ("approve", &approve, "milestone_approve"),
        ("hire", &hire, "proposal_hire"),
        ("end", &end, "contract_end"),
    ] {
        assert_eq!(
            got.status,
            202,
            "{what}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(got.json()["approval"]["type"], kind);
        ids.push(approval_id(&got.json()));
    }
    let msgs = messages(&app, 4).await;
    for id in &ids {
        tracked(&app, id).await;
    }
    for (word, msg_has) in [
        ("Fund milestone", "$450.00"),
        ("Release milestone payment", "$150.50"),
        ("End contract", "Spanish Sentiment Labeling Contract"),
    ] {
        assert!(
            msgs.iter()
                .any(|m| m.text.contains(word) && m.text.contains(msg_has)),
            "no {word:?} message with {msg_has:?}: {:#?}",
            msgs.iter().map(|m| &m.text).collect::<Vec<_>>()
        );
    }
    let hire_msg = msgs
        .iter()
        .find(|m| m.text.contains("Hire"))
        .expect("a hire message");
    for expected in [
        "$300.00 (requested by agent)",
        "$30.00 marketplace fee",
        "$9.95 contract fee",
        "= $339.95",
        "Pilot batch",
        "Maria G.",
    ] {
        assert!(
            hire_msg.text.contains(expected),
            "{expected:?} missing from {:?}",
            hire_msg.text
        );
    }
    for msg in &msgs {
        assert!(
            msg.text.contains(AGENT_UA),
            "the agent is not named: {:?}",
            msg.text
        );
    }

    // Asking again gets the same approvals from OpenTrain: nothing is posted twice.
    let again = send(
        &client,
        Method::POST,
        &format!("{p}/milestones/ms_1/fund"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(approval_id(&again.json()), ids[0]);
    let app = taken_in(app).await;
    assert_eq!(
        app.telegram.messages(CHAT).len(),
        4,
        "a message was posted twice"
    );
    assert_eq!(tracked_count(&app).await, 4);
}

#[tokio::test]
async fn a_contract_end_answered_200_posts_nothing() {
    let app = proxy_app().await;
    app.opentrain.add_simple_contract(
        "ctr_2",
        "Unfunded",
        "Ana P.",
        &[("ms_3", "Batch", 10.0, "NOT_FUNDED")],
    );
    let got = send(
        &agent_client(),
        Method::POST,
        &format!("{}/contracts/ctr_2/end", base(&app)),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json(),
        json!({"ok": true, "contractId": "ctr_2", "status": "ended"})
    );
    assert_same_as_sent(
        &app,
        "direct end",
        "POST",
        "/api/public/v1/contracts/ctr_2/end",
        &got,
    );
    let app = taken_in(app).await;
    assert!(app.telegram.messages(CHAT).is_empty());
    assert_eq!(tracked_count(&app).await, 0);
}

#[tokio::test]
async fn the_same_202_through_the_proxy_and_the_hook_posts_once() {
    let app = proxy_app().await;
    labeling_contract(&app);
    let got = send(
        &agent_client(),
        Method::POST,
        &format!("{}/milestones/ms_1/fund", base(&app)),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(got.status, 202);
    let body = got.json();
    let id = approval_id(&body);
    tracked(&app, &id).await;
    // Posted first, so a duplicate that queued another post would have one to repeat.
    messages(&app, 1).await;

    let (status, answer) = app.submit(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["approvalId"], id.as_str());
    no_due_work(&app).await;
    assert_eq!(app.telegram.messages(CHAT).len(), 1, "posted twice");
}

#[tokio::test]
async fn an_approval_event_in_an_updates_page_read_through_the_proxy_is_a_doorbell() {
    // A poll interval far beyond the test: only the doorbell can bring the news.
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        proxy: true,
        ..Options::default()
    })
    .await;
    labeling_contract(&app);
    let client = agent_client();
    let p = base(&app);
    let fund = send(
        &client,
        Method::POST,
        &format!("{p}/milestones/ms_1/fund"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let id = approval_id(&fund.json());
    let message_id = messages(&app, 1).await[0].message_id;

    app.opentrain.resolve(&id, "declined", None);
    let page = send(
        &client,
        Method::GET,
        &format!("{p}/updates"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert_same_as_sent(
        &app,
        "the /updates page",
        "GET",
        "/api/public/v1/updates",
        &page,
    );
    assert_eq!(page.json()["events"][0]["data"]["approvalId"], id.as_str());

    eventually("the message edited to Declined", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == message_id && m.text.contains("Declined"))
    })
    .await;
    assert_eq!(app.approval(&id).await["status"], "declined");
}

#[tokio::test]
async fn an_answer_intake_refuses_or_too_large_to_read_still_reaches_the_agent_unchanged() {
    let app = proxy_app().await;
    let client = agent_client();
    let p = base(&app);
    let approval = |id: &str, url: &str| {
        json!({"id": id, "type": "milestone_fund", "status": "pending", "contractId": "ctr_9",
               "milestoneId": "ms_9", "jobId": "job_9", "approvalUrl": url,
               "expiresAt": "2099-01-01T00:00:00.000Z", "resolvedAt": null, "result": null,
               "createdAt": "2026-01-01T00:00:00.000Z"})
    };
    // A link that is not <app_url>/approvals/<id>: intake refuses it, the agent is not affected.
    let refused = serde_json::to_vec(&json!({
        "approval": approval("apr_evil", "https://evil.example/approvals/apr_evil"),
        "message": "m"
    }))
    .unwrap();
    app.opentrain.serve_raw(
        "POST",
        "/api/public/v1/milestones/ms_9/fund",
        202,
        "application/json",
        refused.clone(),
    );
    // A 202 too large to be an approval streams through unread.
    let large = serde_json::to_vec(&json!({
        "approval": approval("apr_large", &format!("{APP_URL}/approvals/apr_large")),
        "message": "x".repeat(100 * 1024)
    }))
    .unwrap();
    app.opentrain.serve_raw(
        "POST",
        "/api/public/v1/milestones/ms_8/fund",
        202,
        "application/json",
        large.clone(),
    );

    for (path, expected) in [
        ("/milestones/ms_9/fund", refused),
        ("/milestones/ms_8/fund", large),
    ] {
        let got = send(
            &client,
            Method::POST,
            &format!("{p}{path}"),
            Some(OT_TOKEN),
            None,
        )
        .await;
        assert_eq!(got.status, 202, "{path}");
        assert!(got.body == expected, "{path}: body changed");
        assert_same_as_sent(&app, path, "POST", &format!("/api/public/v1{path}"), &got);
    }
    let app = taken_in(app).await;
    assert_eq!(tracked_count(&app).await, 0);
    assert!(app.telegram.messages(CHAT).is_empty());
}

#[tokio::test]
async fn opentrain_unreachable_gives_the_agent_a_prompt_502_with_a_json_body() {
    let dead = closed_address();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[hook]\nlisten = \"127.0.0.1:0\"\ntoken = \"{HOOK_TOKEN}\"\n\
         [opentrain]\napi_url = \"{dead}/api/public/v1\"\napp_url = \"{APP_URL}\"\ntoken = \"{OT_TOKEN}\"\nrequest_timeout_secs = 5\n\
         [store]\npath = \"{}\"\n[console]\nenabled = false\n\
         [proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("countersign.db").display()
    );
    let settings = Settings::from_toml_and_env(Some(&toml), HashMap::new()).expect("settings");
    let app = App::build(settings).await.expect("app builds");
    let proxy = format!("http://{}", app.proxy_addr().expect("proxy on"));
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(shutdown.clone()));

    let client = agent_client();
    for (method, path) in [
        (Method::GET, "/updates"),
        (Method::POST, "/milestones/ms_1/fund"),
    ] {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            send(
                &client,
                method,
                &format!("{proxy}{path}"),
                Some(OT_TOKEN),
                None,
            ),
        )
        .await
        .expect("a prompt answer, not a hang");
        assert_eq!(got.status, 502, "{path}");
        assert!(
            got.content_type
                .as_deref()
                .unwrap()
                .starts_with("application/json")
        );
        let body = got.json();
        assert_eq!(body["error"], "bad_gateway");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    shutdown.cancel();
    handle.await.unwrap().expect("clean stop");
}

// current_thread (the default): every task of the app runs on this thread, so the scoped
// subscriber below sees their log lines.
#[tokio::test]
async fn a_proxied_bearer_token_never_appears_in_a_log_line_or_the_list() {
    let logs = capture_logs();

    let app = proxy_app().await;
    labeling_contract(&app);
    app.opentrain
        .add_simple_proposal("prp_1", "Spanish Sentiment Labeling", "Maria G.");
    let client = agent_client();
    let p = base(&app);

    // The agent's own token, refused by OpenTrain: the 401 passes through.
    let refused = send(
        &client,
        Method::POST,
        &format!("{p}/milestones/ms_1/fund"),
        Some(AGENT_TOKEN),
        None,
    )
    .await;
    assert_eq!(refused.status, 401);
    // A token OpenTrain accepts: the approval is captured and posted.
    let fund = send(
        &client,
        Method::POST,
        &format!("{p}/milestones/ms_1/fund"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    let id = approval_id(&fund.json());
    let hire = send(
        &client,
        Method::POST,
        &format!("{p}/proposals/prp_1/hire"),
        Some(OT_TOKEN),
        Some((
            "application/json",
            br#"{"milestone": {"name": "Pilot", "amount": 300}}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(hire.status, 202);
    send(
        &client,
        Method::GET,
        &format!("{p}/updates"),
        Some(OT_TOKEN),
        None,
    )
    .await;
    messages(&app, 2).await;
    let view = tracked(&app, &id).await;

    let (_, list) = app.get("/v1/approvals").await;
    for (what, text) in [
        ("GET /v1/approvals", list.to_string()),
        ("GET /v1/approvals/{id}", view.to_string()),
    ] {
        for token in [OT_TOKEN, AGENT_TOKEN, "AGENTTOKEN"] {
            assert!(!text.contains(token), "{what} reveals a token:\n{text}");
        }
    }
    // The requests went to OpenTrain with the agent's token, as sent.
    assert_eq!(
        agent_requests(&app)[0].authorization.as_deref(),
        Some(&*format!("Bearer {AGENT_TOKEN}"))
    );

    taken_in(app).await;
    let text = logs.text();
    assert!(
        text.contains("proxy: captured an approval"),
        "the capture was not logged:\n{text}"
    );
    for token in [OT_TOKEN, AGENT_TOKEN, "AGENTTOKEN", "Bearer"] {
        assert!(!text.contains(token), "the logs reveal {token}:\n{text}");
    }
    // Nor any body: the approval's message text and the hire terms stay out of the logs.
    for body_text in ["Funding request recorded", "Pilot"] {
        assert!(
            !text.contains(body_text),
            "the logs show a body ({body_text}):\n{text}"
        );
    }
}
