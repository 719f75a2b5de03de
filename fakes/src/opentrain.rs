//! A strict local fake of the OpenTrain public API (`/api/public/v1`), modelled on
//! `shared/opentrain-api.md`. It serves the read endpoints countersign uses (approvals, contracts,
//! proposals, `/updates`, `/auth/me`) and the four money endpoints that create approvals, with the
//! real error envelope and bearer auth. Every request is recorded, and tests can script state
//! (approvals, events, expiry) and faults (error bursts, outages, latency).
//!
//! Where the doc marks behaviour as unknown, the fake picks the variant that is hardest on the
//! client: an expiry nobody reads emits no event, a superseded hire gets a status outside the
//! documented enum, garbage cursors are refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

const API_PREFIX: &str = "/api/public/v1";
const APPROVAL_TTL_HOURS: i64 = 72;
const FIRST_EVENT_ID: u64 = 1000;
const UPDATES_DEFAULT_LIMIT: u64 = 50;
const UPDATES_MAX_LIMIT: u64 = 200;
const BODY_LIMIT: usize = 1 << 20;

const MSG_HIRE: &str = "Hire request recorded. A signed-in human must confirm this approval in the OpenTrain app before the freelancer is hired and any money moves.";
const MSG_FUND: &str = "Funding request recorded. A signed-in human must confirm this approval in the OpenTrain app before any money moves.";
const MSG_APPROVE: &str = "Release request recorded. A signed-in human must confirm this approval in the OpenTrain app before any money moves.";
const MSG_END: &str = "This contract has funded milestones, so a signed-in human must confirm ending it in the OpenTrain app.";

/// Handle to a running fake. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeOpenTrain {
    inner: Arc<Mutex<State>>,
    origin: String,
    app_url: String,
}

/// One request as the fake received it, before any fault or auth check.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    /// Parsed JSON body; a body that is not JSON is kept as a JSON string; `None` when empty.
    pub body: Option<Value>,
    pub user_agent: Option<String>,
    /// The body bytes exactly as received (empty when there was none).
    pub raw_body: Vec<u8>,
    /// Every header as received, lower-case names, in order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One answer exactly as the fake sent it, in the order answers were finished.
#[derive(Clone, Debug)]
pub struct RecordedAnswer {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Every header the handler set, lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer served verbatim (see [`FakeOpenTrain::serve_raw`]).
#[derive(Clone)]
struct RawRoute {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

struct StoredApproval {
    /// Exactly what `GET /approvals/{id}` returns inside `"approval"`.
    json: Value,
    /// Creation order, to pick the newest when several pending ones match.
    seq: u64,
    /// Normalised hire milestone terms; hires compare them to decide "same request" vs supersede.
    hire_terms: Option<Value>,
}

struct Fault {
    status: u16,
    retry_after: Option<u64>,
}

struct State {
    token: String,
    app_url: String,
    scopes: Vec<String>,
    member_role: String,
    supersede_status: String,
    owner_user_id: String,
    organization_id: String,
    token_id: String,
    contracts: HashMap<String, Value>,
    proposals: HashMap<String, Value>,
    approvals: HashMap<String, StoredApproval>,
    /// Kept sorted by numeric id (ids only ever grow).
    events: Vec<(u64, Value)>,
    next_event_id: u64,
    id_seq: u64,
    id_salt: u64,
    faults: VecDeque<Fault>,
    down: bool,
    latency: Duration,
    requests: Vec<RecordedRequest>,
    answers: Vec<RecordedAnswer>,
    /// `(METHOD, exact path)` → scripted answer.
    raw_routes: HashMap<(String, String), RawRoute>,
    /// Approvals that answer 404 while still existing (not yet visible, or visibility flipping).
    hidden: HashSet<String>,
    /// How far OpenTrain's clock lags the real one: lazy expiry happens this much later.
    clock_behind: chrono::Duration,
}

/// A non-2xx answer; rendered as the §6.3 envelope once a request id is drawn.
struct ApiError {
    status: StatusCode,
    message: String,
    details: Value,
    retry_after: Option<u64>,
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

impl FakeOpenTrain {
    /// Binds 127.0.0.1:0, spawns the axum server on the current tokio runtime, returns the handle.
    /// `token` is the only bearer token accepted; `app_url` is the web app origin used to build
    /// `approvalUrl` = `<app_url>/approvals/<id>`.
    pub async fn start(token: &str, app_url: &str) -> FakeOpenTrain {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeOpenTrain: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeOpenTrain: local_addr");
        let app_url = app_url.trim_end_matches('/').to_string();

        // Ids must look opaque and differ between fakes, without a rand dependency.
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let id_salt = splitmix64(
            nanos ^ u64::from(addr.port()) ^ (STARTS.fetch_add(1, Ordering::Relaxed) << 48),
        );

        let mut state = State {
            token: token.to_string(),
            app_url: app_url.clone(),
            scopes: vec!["payments:read".into(), "proposals:read".into()],
            member_role: "OWNER".into(),
            supersede_status: "superseded".into(),
            owner_user_id: String::new(),
            organization_id: String::new(),
            token_id: String::new(),
            contracts: HashMap::new(),
            proposals: HashMap::new(),
            approvals: HashMap::new(),
            events: Vec::new(),
            next_event_id: FIRST_EVENT_ID,
            id_seq: 0,
            id_salt,
            faults: VecDeque::new(),
            down: false,
            latency: Duration::ZERO,
            requests: Vec::new(),
            answers: Vec::new(),
            raw_routes: HashMap::new(),
            hidden: HashSet::new(),
            clock_behind: chrono::Duration::zero(),
        };
        state.owner_user_id = state.new_id("usr");
        state.organization_id = state.new_id("org");
        state.token_id = state.new_id("tok");

        let fake = FakeOpenTrain {
            inner: Arc::new(Mutex::new(state)),
            origin: format!("http://{addr}"),
            app_url,
        };
        // A fallback-only router: routing is done by hand so that faults, auth and the error
        // envelope apply uniformly, including to unknown routes and wrong methods.
        let router = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("FakeOpenTrain server stopped: {e}");
            }
        });
        fake
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        self.origin.clone()
    }

    /// `http://127.0.0.1:PORT/api/public/v1`
    pub fn api_url(&self) -> String {
        format!("{}{API_PREFIX}", self.origin)
    }

    pub fn app_url(&self) -> String {
        self.app_url.clone()
    }

    // --- state setup -----------------------------------------------------------------------

    /// Stores a contract object as in §4.1, keyed by its `"id"` (replaces one with the same id).
    pub fn add_contract(&self, contract: Value) {
        let id = required_id(&contract, "add_contract");
        self.lock().contracts.insert(id, contract);
    }

    /// Stores a proposal object as in §4.2, keyed by its `"id"`.
    pub fn add_proposal(&self, proposal: Value) {
        let id = required_id(&proposal, "add_proposal");
        self.lock().proposals.insert(id, proposal);
    }

    /// Adds an active FIXED_PRICE contract with one milestone per
    /// `(milestone_id, name, amount_usd, status)`; status is usually `NOT_FUNDED` or `ACTIVE_FUNDED`.
    pub fn add_simple_contract(
        &self,
        contract_id: &str,
        title: &str,
        trainer: &str,
        milestones: &[(&str, &str, f64, &str)],
    ) {
        let mut st = self.lock();
        let now = Utc::now();
        let job_id = st.new_id("job");
        let proposal_id = st.new_id("prp");
        let freelancer = freelancer_json(&st.new_id("usr"), trainer);
        let milestones = milestones
            .iter()
            .enumerate()
            .map(|(i, (id, name, amount, status))| {
                let invoice = (*status == "ACTIVE_FUNDED").then(|| st.new_id("inv"));
                milestone_json(
                    id,
                    name,
                    &format!("{name}: deliver per the agreed guidelines"),
                    *amount,
                    status,
                    i + 1,
                    now + chrono::Duration::days(14 * (i as i64 + 1)),
                    invoice,
                    now,
                )
            })
            .collect();
        let contract = contract_json(
            contract_id,
            title,
            &job_id,
            &proposal_id,
            freelancer,
            milestones,
            now,
        );
        st.contracts.insert(contract_id.to_string(), contract);
    }

    /// Adds a shortlisted proposal with the given job title and candidate display name; the bid
    /// is `{amountUsd: 0.06, unit: "PER_LABEL"}`.
    pub fn add_simple_proposal(&self, proposal_id: &str, job_title: &str, candidate: &str) {
        let mut st = self.lock();
        let now = Utc::now();
        let job_id = st.new_id("job");
        let candidate_id = st.new_id("usr");
        let (first, initial) = split_display_name(candidate);
        let slug = candidate
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("-");
        let proposal = json!({
            "id": proposal_id,
            "jobId": job_id,
            "jobTitle": job_title,
            "createdAt": ts(now - chrono::Duration::hours(18)),
            "updatedAt": ts(now),
            "status": { "raw": "SHORTLISTED", "label": "Shortlisted" },
            "bid": { "amountUsd": 0.06, "unit": "PER_LABEL", "labelerHourlyRateUsd": null },
            "candidate": {
                "id": candidate_id,
                "profileSlug": slug,
                "displayName": candidate,
                "firstName": first,
                "lastNameInitial": initial,
                "profileTitle": "Text Annotation Specialist",
                "profilePhotoUrl": format!("{}/images/avatars/{slug}.png", st.app_url),
                "countryCode": "ES",
                "country": "Spain",
                "talentType": "FREELANCER",
                "highestEarningsUsd": 2400,
                "reviewCount": 7
            },
            "metrics": { "interviewScore": 86, "matchScore": 0.91 },
            "aiInterview": { "score": 86, "summary": "Strong annotation background.", "transcriptAvailable": true },
            "verification": {
                "location": { "status": "PASSED", "method": "GPS", "checkedAt": ts(now - chrono::Duration::hours(19)) },
                "identity": { "verified": true }
            },
            "openLabel": null,
            "contract": null
        });
        st.proposals.insert(proposal_id.to_string(), proposal);
    }

    /// Creates a pending approval directly, without the money endpoints' validation or
    /// idempotency (each call makes a new one), and returns the 202 body OpenTrain would send.
    /// `jobId` comes from the contract or proposal when the fake knows it, else it is generated.
    pub fn create_approval(
        &self,
        kind: &str,
        contract_id: Option<&str>,
        milestone_id: Option<&str>,
        proposal_id: Option<&str>,
    ) -> Value {
        let mut st = self.lock();
        let job_id = contract_id
            .and_then(|c| st.contracts.get(c))
            .or_else(|| proposal_id.and_then(|p| st.proposals.get(p)))
            .map(|o| o["jobId"].clone())
            .filter(Value::is_string)
            .unwrap_or_else(|| Value::String(st.new_id("job")));
        let id = st.new_approval(
            kind,
            opt_str(contract_id),
            opt_str(milestone_id),
            opt_str(proposal_id),
            job_id,
            None,
            Utc::now(),
        );
        st.accepted_body(&id)
    }

    /// The stored approval object (as `GET` would return it, without applying lazy expiry).
    pub fn approval(&self, id: &str) -> Option<Value> {
        self.lock().approvals.get(id).map(|a| a.json.clone())
    }

    /// The stored contract object.
    pub fn contract(&self, id: &str) -> Option<Value> {
        self.lock().contracts.get(id).cloned()
    }

    /// The stored proposal object.
    pub fn proposal(&self, id: &str) -> Option<Value> {
        self.lock().proposals.get(id).cloned()
    }

    /// Resolves an approval as the human (or the clock) would: sets `status`, `resolvedAt` = now
    /// and `result`, then appends an `approval.confirmed` event carrying that status (§2.1: the
    /// event fires for every terminal status). For `confirmed` without an explicit `result`, the
    /// type's result object from §1.1 is generated, and the action's effect is applied to the
    /// stored contract/proposal (milestone funded or paid, contract ended, hire → new contract).
    /// Panics on an unknown approval id.
    pub fn resolve(&self, approval_id: &str, status: &str, result: Option<Value>) {
        let mut st = self.lock();
        assert!(
            st.approvals.contains_key(approval_id),
            "FakeOpenTrain::resolve: unknown approval {approval_id}"
        );
        let now = Utc::now();
        let result = match result {
            Some(r) => r,
            None if status == "confirmed" => st.default_result(approval_id),
            None => Value::Null,
        };
        if status == "confirmed" {
            st.apply_confirmation(approval_id, &result, now);
        }
        st.finish_approval(approval_id, status, result, now);
    }

    /// Changes one field of a stored approval without emitting any event (a missed event).
    /// Panics on an unknown approval id.
    pub fn set_approval_field(&self, approval_id: &str, field: &str, value: Value) {
        let mut st = self.lock();
        let approval = st.approvals.get_mut(approval_id).unwrap_or_else(|| {
            panic!("FakeOpenTrain::set_approval_field: unknown approval {approval_id}")
        });
        approval.json[field] = value;
    }

    /// Sets `expiresAt`. Panics on an unknown approval id.
    pub fn set_expires_at(&self, approval_id: &str, at: DateTime<Utc>) {
        self.set_approval_field(approval_id, "expiresAt", Value::String(ts(at)));
    }

    /// Appends an event to `/updates` and returns its id. `jobId` is taken from `data.jobId`
    /// when present, else null.
    pub fn push_event(&self, event_type: &str, resource_id: &str, data: Value) -> String {
        let job_id = data.get("jobId").cloned().unwrap_or(Value::Null);
        self.lock()
            .push_event(event_type, resource_id, job_id, data, Utc::now())
    }

    /// All events in the feed, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Drops an approval; later GETs answer 404.
    pub fn forget_approval(&self, id: &str) {
        self.lock().approvals.remove(id);
    }

    /// Hides (`false`) or shows again (`true`) an approval that still exists: while hidden, its
    /// `GET` answers 404, as for an approval OpenTrain does not show yet.
    pub fn set_visible(&self, id: &str, visible: bool) {
        let mut st = self.lock();
        if visible {
            st.hidden.remove(id);
        } else {
            st.hidden.insert(id.to_string());
        }
    }

    /// Replaces the one accepted bearer token: revoke countersign's by setting another, restore
    /// it by setting it back. Every request with the old token then answers 401.
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_string();
    }

    /// Makes OpenTrain's clock lag the real one by `behind`: a pending approval read after its
    /// `expiresAt` stays pending until OpenTrain's own clock passes it.
    pub fn set_clock_behind(&self, behind: Duration) {
        self.lock().clock_behind =
            chrono::Duration::from_std(behind).expect("FakeOpenTrain: a clock lag that fits");
    }

    /// Scopes reported by `/auth/me` (default `["payments:read", "proposals:read"]`). Other
    /// endpoints do not enforce scopes.
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.lock().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    /// `account.memberRole` reported by `/auth/me` (default `OWNER`).
    pub fn set_member_role(&self, role: &str) {
        self.lock().member_role = role.to_string();
    }

    /// Status given to a pending hire approval superseded by a hire with different terms
    /// (default `superseded`; the real value is unknown, §5.1).
    pub fn set_supersede_status(&self, s: &str) {
        self.lock().supersede_status = s.to_string();
    }

    // --- faults ----------------------------------------------------------------------------

    /// The next `n` requests (any route) answer `status` with the error envelope. For 429 with
    /// `retry_after`, a `Retry-After: <s>` header is added. Calls queue up behind each other.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut st = self.lock();
        for _ in 0..n {
            st.faults.push_back(Fault {
                status,
                retry_after,
            });
        }
    }

    /// While down, every request answers a 503 envelope (queued `fail_next` faults wait).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Serves `body` verbatim, with `status` and `Content-Type: content_type`, for `method` on
    /// exactly `path` (which must be under `/api/public/v1`), e.g. a CSV export or a large JSON
    /// page the typed routes cannot produce. Faults and bearer auth apply to it as to every
    /// other route. Replaces an earlier script for the same method and path.
    pub fn serve_raw(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) {
        assert!(
            path.starts_with(&format!("{API_PREFIX}/")),
            "FakeOpenTrain::serve_raw: {path} is not under {API_PREFIX}"
        );
        let route = RawRoute {
            status: StatusCode::from_u16(status).expect("FakeOpenTrain::serve_raw: a valid status"),
            content_type: content_type.to_string(),
            body: body.into(),
        };
        self.lock()
            .raw_routes
            .insert((method.to_ascii_uppercase(), path.to_string()), route);
    }

    /// Delay added before every answer (default 0).
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    // --- inspection ------------------------------------------------------------------------

    /// Every request received, in order, faulted and unauthorised ones included.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests whose method matches (case-insensitive) and whose path starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(path_prefix))
            .count()
    }

    /// Every answer sent, byte for byte, in the order they were finished.
    pub fn answers(&self) -> Vec<RecordedAnswer> {
        self.lock().answers.clone()
    }

    /// Forgets the recorded requests and answers.
    pub fn clear_requests(&self) {
        let mut st = self.lock();
        st.requests.clear();
        st.answers.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked inside a helper must not take every later assertion down with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// --- HTTP entry point ------------------------------------------------------------------------

async fn handle(AxumState(fake): AxumState<FakeOpenTrain>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        authorization: header_str(header::AUTHORIZATION),
        body: parse_body(&bytes),
        user_agent: header_str(header::USER_AGENT),
        raw_body: bytes.to_vec(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let latency = {
        let mut st = fake.lock();
        st.requests.push(recorded);
        st.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = respond(&fake, &parts.method, &parts.uri, &parts.headers, &bytes);
    // Record the exact bytes sent, so tests can compare what a client got with what was sent.
    let (head, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let answer = RecordedAnswer {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        status: head.status.as_u16(),
        headers: head
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    fake.lock().answers.push(answer);
    Response::from_parts(head, axum::body::Body::from(body))
}

/// Synchronous so the (non-Send) state guard never lives across an await.
fn respond(
    fake: &FakeOpenTrain,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut st = fake.lock();
    if let Some(raw) = st
        .raw_routes
        .get(&(method.as_str().to_string(), uri.path().to_string()))
        .cloned()
    {
        let outcome = st
            .injected_fault()
            .map_or_else(|| st.authorize(headers), Err);
        return match outcome {
            Ok(()) => (
                raw.status,
                [(header::CONTENT_TYPE, raw.content_type)],
                raw.body,
            )
                .into_response(),
            Err(e) => {
                let request_id = st.request_id();
                e.into_response(request_id)
            }
        };
    }
    let outcome = st
        .injected_fault()
        .map_or_else(|| st.route(method, uri, headers, body), Err);
    match outcome {
        Ok((status, value)) => (status, Json(value)).into_response(),
        Err(e) => {
            let request_id = st.request_id();
            e.into_response(request_id)
        }
    }
}

impl State {
    fn injected_fault(&mut self) -> Option<ApiError> {
        if self.down {
            return Some(ApiError::new(
                503,
                "Service temporarily unavailable",
                json!({}),
            ));
        }
        let fault = self.faults.pop_front()?;
        let message = StatusCode::from_u16(fault.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Injected failure");
        let mut e = ApiError::new(fault.status, message, json!({}));
        if fault.status == 429 {
            e.retry_after = fault.retry_after;
        }
        Some(e)
    }

    fn route(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> ApiResult {
        let path = uri.path();
        let Some(rest) = path.strip_prefix(API_PREFIX) else {
            return Err(route_not_found(method, path));
        };
        if !rest.starts_with('/') {
            return Err(route_not_found(method, path));
        }
        self.authorize(headers)?;
        let segments: Vec<&str> = rest[1..].split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["approvals", id]) if !id.is_empty() => self.get_approval(id),
            ("GET", ["contracts", id]) if !id.is_empty() => self.get_contract(id),
            ("GET", ["proposals", id]) if !id.is_empty() => self.get_proposal(id),
            ("GET", ["updates"]) => self.get_updates(uri),
            ("GET", ["auth", "me"]) => Ok((StatusCode::OK, self.auth_me())),
            ("POST", ["proposals", id, "hire"]) if !id.is_empty() => self.hire(id, body),
            ("POST", ["milestones", id, "fund"]) if !id.is_empty() => {
                self.milestone_request(id, "milestone_fund")
            }
            ("POST", ["milestones", id, "approve"]) if !id.is_empty() => {
                self.milestone_request(id, "milestone_approve")
            }
            ("POST", ["contracts", id, "end"]) if !id.is_empty() => self.end_contract(id),
            _ => Err(route_not_found(method, path)),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if token == self.token => Ok(()),
            Some(_) => Err(ApiError::new(
                401,
                "Invalid or revoked API token",
                json!({}),
            )),
            None => Err(ApiError::new(
                401,
                "Missing API token. Send Authorization: Bearer <token>.",
                json!({}),
            )),
        }
    }

    // --- reads ---------------------------------------------------------------------------------

    fn get_approval(&mut self, id: &str) -> ApiResult {
        if self.hidden.contains(id) {
            return Err(not_found("approvals", "approvalId", id));
        }
        self.expire_if_due(id, Utc::now() - self.clock_behind);
        match self.approvals.get(id) {
            Some(a) => Ok((StatusCode::OK, json!({ "approval": a.json }))),
            None => Err(not_found("approvals", "approvalId", id)),
        }
    }

    fn get_contract(&self, id: &str) -> ApiResult {
        match self.contracts.get(id) {
            Some(c) => Ok((StatusCode::OK, json!({ "contract": c }))),
            None => Err(not_found("contracts", "contractId", id)),
        }
    }

    fn get_proposal(&self, id: &str) -> ApiResult {
        match self.proposals.get(id) {
            Some(p) => Ok((StatusCode::OK, json!({ "proposal": p }))),
            None => Err(not_found("proposals", "proposalId", id)),
        }
    }

    fn get_updates(&self, uri: &Uri) -> ApiResult {
        let Query(params) = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|_| ApiError::new(400, "Malformed query string", json!({})))?;
        let limit = match params.get("limit") {
            None => UPDATES_DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=UPDATES_MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "limit must be an integer between 1 and 200",
                        json!({ "param": "limit", "value": raw }),
                    )
                })?,
        };
        // The doc says "omit on the first poll"; an empty or non-numeric cursor is refused so a
        // client that sends garbage finds out here rather than in production.
        let cursor = match params.get("cursor") {
            None => None,
            Some(raw) => Some(
                raw.parse::<u64>()
                    .ok()
                    .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        ApiError::new(
                            400,
                            "cursor must be a numeric event id from a previous nextCursor",
                            json!({ "param": "cursor", "value": raw }),
                        )
                    })?,
            ),
        };
        let start = self
            .events
            .partition_point(|(id, _)| cursor.is_some_and(|c| *id <= c));
        let end = self.events.len().min(start + limit as usize);
        let page = &self.events[start..end];
        let next_cursor = match (page.last(), cursor) {
            (Some((id, _)), _) => json!(id.to_string()),
            (None, Some(c)) => json!(c.to_string()),
            (None, None) => Value::Null,
        };
        Ok((
            StatusCode::OK,
            json!({
                "events": page.iter().map(|(_, e)| e).collect::<Vec<_>>(),
                "nextCursor": next_cursor,
                "hasMore": end < self.events.len(),
            }),
        ))
    }

    fn auth_me(&self) -> Value {
        json!({
            "actor": {
                "userId": self.owner_user_id,
                "email": "owner@example.test",
                "firstName": "Olivia",
                "lastName": "Owner",
                "fullName": "Olivia Owner",
                "userType": "EMPLOYER"
            },
            "token": {
                "id": self.token_id,
                "label": "countersign",
                "scopes": self.scopes,
                "ownerOrganizationId": self.organization_id
            },
            "account": {
                "kind": "organization",
                "organizationId": self.organization_id,
                "ownerUserId": self.owner_user_id,
                "memberRole": self.member_role
            }
        })
    }

    // --- money endpoints -----------------------------------------------------------------------

    fn hire(&mut self, proposal_id: &str, body: &[u8]) -> ApiResult {
        let job_id = match self.proposals.get(proposal_id) {
            Some(p) => p["jobId"].clone(),
            None => return Err(not_found("proposals", "proposalId", proposal_id)),
        };
        let terms = parse_hire_terms(body)?;
        let now = Utc::now();
        if let Some(existing) = self.pending_for("proposal_hire", "proposalId", proposal_id, now) {
            if self.approvals[&existing].hire_terms.as_ref() == Some(&terms) {
                return Ok((StatusCode::ACCEPTED, self.accepted_body(&existing)));
            }
            // One live hire request per proposal: the old one leaves the pending state.
            let status = self.supersede_status.clone();
            self.finish_approval(&existing, &status, Value::Null, now);
        }
        let id = self.new_approval(
            "proposal_hire",
            Value::Null,
            Value::Null,
            json!(proposal_id),
            job_id,
            Some(terms),
            now,
        );
        Ok((StatusCode::ACCEPTED, self.accepted_body(&id)))
    }

    fn milestone_request(&mut self, milestone_id: &str, kind: &str) -> ApiResult {
        let Some((contract_id, milestone_status)) = self.find_milestone(milestone_id) else {
            return Err(not_found("milestones", "milestoneId", milestone_id));
        };
        let now = Utc::now();
        if let Some(existing) = self.pending_for(kind, "milestoneId", milestone_id, now) {
            return Ok((StatusCode::ACCEPTED, self.accepted_body(&existing)));
        }
        let contract = &self.contracts[&contract_id];
        if contract["status"] == "ended" {
            return Err(conflict(
                "Contract has ended",
                "contract_ended",
                json!({ "contractId": contract_id }),
            ));
        }
        let (required, reason, message) = if kind == "milestone_fund" {
            (
                "NOT_FUNDED",
                "milestone_not_fundable",
                "Milestone cannot be funded in its current state",
            )
        } else {
            (
                "ACTIVE_FUNDED",
                "milestone_not_funded",
                "Milestone is not funded, so there is nothing to release",
            )
        };
        if milestone_status != required {
            return Err(conflict(
                message,
                reason,
                json!({ "milestoneId": milestone_id, "status": milestone_status }),
            ));
        }
        let job_id = contract["jobId"].clone();
        let id = self.new_approval(
            kind,
            json!(contract_id),
            json!(milestone_id),
            Value::Null,
            job_id,
            None,
            now,
        );
        Ok((StatusCode::ACCEPTED, self.accepted_body(&id)))
    }

    fn end_contract(&mut self, contract_id: &str) -> ApiResult {
        let Some(contract) = self.contracts.get(contract_id) else {
            return Err(not_found("contracts", "contractId", contract_id));
        };
        if contract["status"] == "ended" {
            return Err(conflict(
                "Contract has already ended",
                "contract_ended",
                json!({ "contractId": contract_id }),
            ));
        }
        let funded = milestones_of(contract).any(|m| m["status"] == "ACTIVE_FUNDED");
        let job_id = contract["jobId"].clone();
        let now = Utc::now();
        if let Some(existing) = self.pending_for("contract_end", "contractId", contract_id, now) {
            return Ok((StatusCode::ACCEPTED, self.accepted_body(&existing)));
        }
        if funded {
            let id = self.new_approval(
                "contract_end",
                json!(contract_id),
                Value::Null,
                Value::Null,
                job_id,
                None,
                now,
            );
            return Ok((StatusCode::ACCEPTED, self.accepted_body(&id)));
        }
        // Nothing in escrow: ending executes at once, no human involved.
        end_contract_now(
            self.contracts.get_mut(contract_id).expect("checked above"),
            now,
        );
        Ok((
            StatusCode::OK,
            json!({ "ok": true, "contractId": contract_id, "status": "ended" }),
        ))
    }

    // --- approvals -----------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn new_approval(
        &mut self,
        kind: &str,
        contract_id: Value,
        milestone_id: Value,
        proposal_id: Value,
        job_id: Value,
        hire_terms: Option<Value>,
        now: DateTime<Utc>,
    ) -> String {
        let id = self.new_id("apr");
        let json = json!({
            "id": id,
            "type": kind,
            "status": "pending",
            "contractId": contract_id,
            "milestoneId": milestone_id,
            "jobId": job_id,
            "proposalId": proposal_id,
            "approvalUrl": format!("{}/approvals/{id}", self.app_url),
            "expiresAt": ts(now + chrono::Duration::hours(APPROVAL_TTL_HOURS)),
            "resolvedAt": null,
            "result": null,
            "createdAt": ts(now),
        });
        let seq = self.id_seq;
        self.approvals.insert(
            id.clone(),
            StoredApproval {
                json,
                seq,
                hire_terms,
            },
        );
        id
    }

    /// The 202 body. The doc's fund/approve examples omit `proposalId`, so those do too.
    fn accepted_body(&self, id: &str) -> Value {
        let mut approval = self.approvals[id].json.clone();
        let kind = approval["type"].as_str().unwrap_or_default().to_string();
        if matches!(kind.as_str(), "milestone_fund" | "milestone_approve")
            && let Some(obj) = approval.as_object_mut()
        {
            obj.remove("proposalId");
        }
        let message = match kind.as_str() {
            "proposal_hire" => MSG_HIRE,
            "milestone_fund" => MSG_FUND,
            "milestone_approve" => MSG_APPROVE,
            "contract_end" => MSG_END,
            _ => {
                "Request recorded. A signed-in human must confirm this approval in the OpenTrain app."
            }
        };
        json!({ "approval": approval, "message": message })
    }

    /// The newest still-pending approval of `kind` whose `key` field equals `target`. Looking at
    /// it counts as a read, so one past its expiry flips to expired and is not returned.
    fn pending_for(
        &mut self,
        kind: &str,
        key: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let id = self
            .approvals
            .iter()
            .filter(|(_, a)| {
                a.json["type"] == kind && a.json[key] == target && a.json["status"] == "pending"
            })
            .max_by_key(|(_, a)| a.seq)
            .map(|(id, _)| id.clone())?;
        if self.expire_if_due(&id, now) {
            None
        } else {
            Some(id)
        }
    }

    /// §0.3 lazy expiry: a pending approval read after `expiresAt` becomes expired on the spot.
    fn expire_if_due(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        let due = self.approvals.get(id).is_some_and(|a| {
            a.json["status"] == "pending"
                && a.json["expiresAt"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .is_some_and(|at| at <= now)
        });
        if due {
            self.finish_approval(id, "expired", Value::Null, now);
        }
        due
    }

    /// Moves an approval to a terminal status and announces it on `/updates`.
    fn finish_approval(&mut self, id: &str, status: &str, result: Value, now: DateTime<Utc>) {
        let Some(approval) = self.approvals.get_mut(id) else {
            return;
        };
        approval.json["status"] = json!(status);
        approval.json["resolvedAt"] = json!(ts(now));
        approval.json["result"] = result;
        let job_id = approval.json["jobId"].clone();
        self.push_event(
            "approval.confirmed",
            id,
            job_id,
            json!({ "approvalId": id, "status": status }),
            now,
        );
    }

    fn default_result(&mut self, id: &str) -> Value {
        let approval = self.approvals[id].json.clone();
        match approval["type"].as_str().unwrap_or_default() {
            "proposal_hire" => {
                let freelancer = approval["proposalId"]
                    .as_str()
                    .and_then(|p| self.proposals.get(p))
                    .and_then(|p| p["candidate"]["id"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| self.new_id("usr"));
                json!({
                    "hired": true,
                    "contractId": self.new_id("ctr"),
                    "jobId": approval["jobId"],
                    "freelancerUserId": freelancer,
                })
            }
            "milestone_fund" => json!({
                "invoiceId": self.new_id("inv"),
                "paymentIntentId": self.new_id("pi"),
            }),
            "milestone_approve" => {
                let invoice = approval["milestoneId"]
                    .as_str()
                    .and_then(|m| self.milestone(m))
                    .and_then(|m| m["invoiceId"].as_str().map(str::to_string))
                    .unwrap_or_else(|| self.new_id("inv"));
                json!({ "invoiceId": invoice, "payoutTransactionId": self.new_id("txn") })
            }
            "contract_end" => json!({ "contractEnded": true }),
            _ => json!({}),
        }
    }

    /// "Confirmed" means the action already executed (§1.1), so later reads of the contract or
    /// proposal must show its effect.
    fn apply_confirmation(&mut self, id: &str, result: &Value, now: DateTime<Utc>) {
        let approval = self.approvals[id].json.clone();
        let hire_terms = self.approvals[id].hire_terms.clone();
        let milestone_id = approval["milestoneId"].as_str().unwrap_or_default();
        match approval["type"].as_str().unwrap_or_default() {
            "milestone_fund" => self.update_milestone(milestone_id, now, |m| {
                m["status"] = json!("ACTIVE_FUNDED");
                if let Some(inv) = result.get("invoiceId").filter(|v| v.is_string()) {
                    m["invoiceId"] = inv.clone();
                }
            }),
            // The API's name for a paid-out milestone is not documented; the UI says "Paid".
            "milestone_approve" => {
                self.update_milestone(milestone_id, now, |m| m["status"] = json!("PAID"))
            }
            "contract_end" => {
                if let Some(c) = approval["contractId"]
                    .as_str()
                    .and_then(|c| self.contracts.get_mut(c))
                {
                    end_contract_now(c, now);
                }
            }
            "proposal_hire" => self.hire_confirmed(&approval, hire_terms, result, now),
            _ => {}
        }
    }

    fn hire_confirmed(
        &mut self,
        approval: &Value,
        terms: Option<Value>,
        result: &Value,
        now: DateTime<Utc>,
    ) {
        let Some(contract_id) = result["contractId"].as_str() else {
            return;
        };
        let Some(proposal) = approval["proposalId"]
            .as_str()
            .and_then(|p| self.proposals.get(p))
            .cloned()
        else {
            return;
        };
        if !self.contracts.contains_key(contract_id) {
            let terms = terms.unwrap_or_else(|| json!({}));
            let amount = terms["amount"].as_f64().unwrap_or(0.0);
            let name = terms["name"].as_str().unwrap_or_default();
            let description = terms["description"].as_str().unwrap_or_default();
            let due = terms["dueDate"]
                .as_str()
                .and_then(parse_due_date)
                .unwrap_or(now + chrono::Duration::days(14));
            let milestone_id = self.new_id("mst");
            let invoice_id = self.new_id("inv");
            let candidate = &proposal["candidate"];
            let freelancer = json!({
                "userId": result.get("freelancerUserId").cloned().unwrap_or_else(|| candidate["id"].clone()),
                "displayName": candidate["displayName"],
                "country": candidate["country"],
                "profilePath": format!("/profile/{}", candidate["profileSlug"].as_str().unwrap_or_default()),
            });
            // The hire funds the first milestone on confirmation (§4.6).
            let milestone = milestone_json(
                &milestone_id,
                if name.is_empty() { description } else { name },
                description,
                amount,
                "ACTIVE_FUNDED",
                1,
                due,
                Some(invoice_id),
                now,
            );
            let contract = contract_json(
                contract_id,
                proposal["jobTitle"].as_str().unwrap_or("Contract"),
                proposal["jobId"].as_str().unwrap_or_default(),
                proposal["id"].as_str().unwrap_or_default(),
                freelancer,
                vec![milestone],
                now,
            );
            self.contracts.insert(contract_id.to_string(), contract);
        }
        if let Some(p) = proposal["id"]
            .as_str()
            .and_then(|p| self.proposals.get_mut(p))
        {
            p["status"] = json!({ "raw": "HIRED", "label": "Hired" });
            p["contract"] = json!({ "id": contract_id, "status": "active" });
            p["updatedAt"] = json!(ts(now));
        }
    }

    // --- contracts and milestones ----------------------------------------------------------------

    /// `(contract id, milestone status)` of the contract holding this milestone.
    fn find_milestone(&self, milestone_id: &str) -> Option<(String, String)> {
        self.contracts.iter().find_map(|(cid, c)| {
            milestones_of(c).find(|m| m["id"] == milestone_id).map(|m| {
                (
                    cid.clone(),
                    m["status"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
    }

    fn milestone(&self, milestone_id: &str) -> Option<&Value> {
        self.contracts
            .values()
            .find_map(|c| milestones_of(c).find(|m| m["id"] == milestone_id))
    }

    fn update_milestone(
        &mut self,
        milestone_id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Value),
    ) {
        for contract in self.contracts.values_mut() {
            let found = contract
                .get_mut("milestones")
                .and_then(Value::as_array_mut)
                .and_then(|ms| ms.iter_mut().find(|m| m["id"] == milestone_id));
            if let Some(m) = found {
                change(m);
                contract["updatedAt"] = json!(ts(now));
                refresh_budget(contract);
                return;
            }
        }
    }

    // --- events and ids ------------------------------------------------------------------------

    fn push_event(
        &mut self,
        event_type: &str,
        resource_id: &str,
        job_id: Value,
        data: Value,
        now: DateTime<Utc>,
    ) -> String {
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.events.push((
            id,
            json!({
                "id": id.to_string(),
                "type": event_type,
                "apiVersion": "v1",
                "createdAt": ts(now),
                "resourceId": resource_id,
                "jobId": job_id,
                "data": data,
            }),
        ));
        id.to_string()
    }

    /// `<prefix>_<base36>`: unique (splitmix64 is a bijection) but not guessable from a counter.
    fn new_id(&mut self, prefix: &str) -> String {
        self.id_seq += 1;
        format!(
            "{prefix}_{}",
            base36(splitmix64(self.id_salt ^ self.id_seq))
        )
    }

    /// UUID-shaped, like the doc's `9d1f3a8e-...`.
    fn request_id(&mut self) -> String {
        self.id_seq += 1;
        let a = splitmix64(self.id_salt ^ self.id_seq ^ 0x5eed);
        let b = splitmix64(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>, details: Value) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            details,
            retry_after: None,
        }
    }

    fn into_response(self, request_id: String) -> Response {
        let body = json!({
            "error": self.message,
            "code": error_code(self.status.as_u16()),
            "requestId": request_id,
            "details": self.details,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn error_code(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        429 => "RATE_LIMITED",
        400..=499 => "BAD_REQUEST",
        _ => "INTERNAL_ERROR",
    }
}

fn not_found(resource: &str, key: &str, id: &str) -> ApiError {
    let mut details = Map::new();
    details.insert("resource".into(), json!(resource));
    details.insert(key.into(), json!(id));
    ApiError::new(
        404,
        format!(
            "No such {} or not visible to this token",
            resource.trim_end_matches('s')
        ),
        Value::Object(details),
    )
}

fn route_not_found(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        404,
        format!("No route for {method} {path}"),
        json!({ "method": method.as_str(), "path": path }),
    )
}

fn conflict(message: &str, reason: &str, extra: Value) -> ApiError {
    let mut details = Map::new();
    details.insert("reason".into(), json!(reason));
    if let Value::Object(extra) = extra {
        details.extend(extra);
    }
    ApiError::new(409, message, Value::Object(details))
}

fn bad_request(message: &str, field: &str) -> ApiError {
    ApiError::new(400, message, json!({ "field": field }))
}

/// Validates a hire body (§5.1) and returns its terms in a canonical form, so that `300` and
/// `300.0` or a missing vs null name compare as the same request.
fn parse_hire_terms(body: &[u8]) -> Result<Value, ApiError> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(400, "Request body must be a JSON object", json!({})))?;
    let Some(m) = parsed.get("milestone").filter(|m| m.is_object()) else {
        return Err(bad_request("milestone is required", "milestone"));
    };
    let text = |key: &str| -> Result<String, ApiError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.trim().to_string()),
            Some(_) => Err(bad_request(
                &format!("milestone.{key} must be a string"),
                &format!("milestone.{key}"),
            )),
        }
    };
    let name = text("name")?;
    let description = text("description")?;
    if name.is_empty() && description.is_empty() {
        return Err(bad_request(
            "milestone needs a name or a description",
            "milestone.name",
        ));
    }
    let amount = m
        .get("amount")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite() && *a > 0.0)
        .ok_or_else(|| {
            bad_request(
                "milestone.amount must be a positive number (USD)",
                "milestone.amount",
            )
        })?;
    let due = match m.get("dueDate") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if parse_due_date(s).is_some() => json!(s),
        Some(_) => {
            return Err(bad_request(
                "milestone.dueDate must be a date (YYYY-MM-DD or ISO 8601)",
                "milestone.dueDate",
            ));
        }
    };
    Ok(json!({ "name": name, "description": description, "amount": amount, "dueDate": due }))
}

fn parse_due_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

fn milestones_of(contract: &Value) -> impl Iterator<Item = &Value> {
    contract["milestones"].as_array().into_iter().flatten()
}

fn end_contract_now(contract: &mut Value, now: DateTime<Utc>) {
    contract["status"] = json!("ended");
    contract["endDate"] = json!(ts(now));
    contract["updatedAt"] = json!(ts(now));
}

/// Keeps the derived budget fields in line with the milestones after a status change.
fn refresh_budget(contract: &mut Value) {
    let milestones: Vec<Value> = milestones_of(contract).cloned().collect();
    let funded: Vec<&Value> = milestones
        .iter()
        .filter(|m| m["status"] == "ACTIVE_FUNDED")
        .collect();
    let funded_usd: f64 = funded.iter().filter_map(|m| m["amountUsd"].as_f64()).sum();
    let active = funded.first().map_or(Value::Null, |m| {
        json!({
            "id": m["id"], "name": m["name"], "amountUsd": m["amountUsd"],
            "volume": m["volume"], "status": m["status"],
        })
    });
    if let Some(obj) = contract.as_object_mut() {
        obj.insert("hasActiveMilestone".into(), json!(!funded.is_empty()));
    }
    if let Some(budget) = contract.get_mut("budget").and_then(Value::as_object_mut) {
        budget.insert("fundedAmountUsd".into(), usd(funded_usd));
        budget.insert("activeMilestone".into(), active);
    }
}

#[allow(clippy::too_many_arguments)]
fn milestone_json(
    id: &str,
    name: &str,
    description: &str,
    amount: f64,
    status: &str,
    number: usize,
    due: DateTime<Utc>,
    invoice_id: Option<String>,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "description": description,
        "status": status,
        "amountUsd": usd(amount),
        "volume": null,
        "milestoneNumber": number,
        "dueDate": ts(due),
        "pendingApproval": false,
        "needsReview": false,
        "invoiceId": invoice_id,
        "createdAt": ts(now),
    })
}

fn contract_json(
    id: &str,
    title: &str,
    job_id: &str,
    proposal_id: &str,
    freelancer: Value,
    milestones: Vec<Value>,
    now: DateTime<Utc>,
) -> Value {
    let total: f64 = milestones
        .iter()
        .filter_map(|m| m["amountUsd"].as_f64())
        .sum();
    let mut contract = json!({
        "id": id,
        "status": "active",
        "title": title,
        "jobId": job_id,
        "proposalId": proposal_id,
        "paymentType": "FIXED_PRICE",
        "rateUsd": usd(total),
        "estimatedTotalUsd": usd(total),
        "estimatedVolume": null,
        "hasActiveMilestone": false,
        "startDate": ts(now),
        "endDate": null,
        "createdAt": ts(now),
        "updatedAt": ts(now),
        "freelancer": freelancer,
        "milestones": milestones,
        "jobDmConversationId": format!("cnv_{}", id.trim_start_matches("ctr_")),
        "budget": {
            "contractId": id,
            "paymentType": "FIXED_PRICE",
            "state": "OK",
            "fundedVolume": 0,
            "fundedAmountUsd": 0,
            "consumed": { "seconds": 0, "hours": 0, "labels": 0, "tasks": 0 },
            "consumedVolume": 0,
            "remainingVolume": 0,
            "consumedFraction": 0,
            "activeMilestone": null,
            "lastUsageAt": null
        }
    });
    refresh_budget(&mut contract);
    contract
}

fn freelancer_json(user_id: &str, display_name: &str) -> Value {
    let slug = display_name
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    json!({
        "userId": user_id,
        "displayName": display_name,
        "country": "Spain",
        "profilePath": format!("/profile/{slug}"),
    })
}

/// "Maria G." → ("Maria", "G")
fn split_display_name(name: &str) -> (String, String) {
    let mut words = name.split_whitespace();
    let first = words.next().unwrap_or_default().to_string();
    let initial = words
        .next()
        .and_then(|w| w.chars().next())
        .map(String::from)
        .unwrap_or_default();
    (first, initial)
}

/// Whole dollar amounts as JSON integers (`300`, as the doc shows), others as decimals.
fn usd(amount: f64) -> Value {
    if amount.fract() == 0.0 && amount.abs() < 9.0e15 {
        json!(amount as i64)
    } else {
        json!(amount)
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| json!(s))
}

fn required_id(object: &Value, caller: &str) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("FakeOpenTrain::{caller}: object needs a string \"id\""))
        .to_string()
}

fn parse_body(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    )
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const TOKEN: &str = "ot_pat_test_secret";
    const APP: &str = "https://app.opentrain.test";

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A minimal HTTP/1.1 client over a blocking socket (the crate has no HTTP client).
    async fn call(
        fake: &FakeOpenTrain,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let addr = fake.origin().trim_start_matches("http://").to_string();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: fake-test\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = token {
            request.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        request.push_str(&body);
        tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(&addr).expect("connect");
            socket.write_all(request.as_bytes()).expect("write");
            let mut raw = Vec::new();
            socket.read_to_end(&mut raw).expect("read");
            let raw = String::from_utf8(raw).expect("utf8 reply");
            let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
            let mut lines = head.lines();
            let status = lines
                .next()
                .expect("status line")
                .split(' ')
                .nth(1)
                .expect("code");
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            Reply {
                status: status.parse().expect("numeric status"),
                headers,
                body: if body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(body).expect("json body")
                },
            }
        })
        .await
        .expect("client task")
    }

    async fn get(fake: &FakeOpenTrain, path: &str) -> Reply {
        call(fake, "GET", path, Some(TOKEN), None).await
    }

    fn assert_envelope(reply: &Reply, status: u16, code: &str) {
        assert_eq!(reply.status, status, "body: {}", reply.body);
        assert_eq!(reply.body["code"], code);
        assert!(reply.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(
            reply.body["requestId"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
        assert!(reply.body["details"].is_object());
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn opentrain_auth_is_enforced_with_the_error_envelope() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        let created = fake.create_approval("milestone_fund", Some("ctr_1"), Some("mst_1"), None);
        let id = created["approval"]["id"].as_str().unwrap().to_string();

        let missing = call(&fake, "GET", &format!("/approvals/{id}"), None, None).await;
        assert_envelope(&missing, 401, "UNAUTHORIZED");
        let wrong = call(
            &fake,
            "GET",
            &format!("/approvals/{id}"),
            Some("ot_pat_other"),
            None,
        )
        .await;
        assert_envelope(&wrong, 401, "UNAUTHORIZED");

        let ok = get(&fake, &format!("/approvals/{id}")).await;
        assert_eq!(ok.status, 200);
        assert_eq!(
            ok.body["approval"]["approvalUrl"],
            format!("{APP}/approvals/{id}")
        );
        assert!(
            ok.body["approval"]
                .as_object()
                .unwrap()
                .contains_key("proposalId")
        );
        // The 202 body follows the doc's fund example, which has no proposalId key.
        assert!(
            !created["approval"]
                .as_object()
                .unwrap()
                .contains_key("proposalId")
        );

        let unknown = get(&fake, "/approvals/apr_nope").await;
        assert_envelope(&unknown, 404, "NOT_FOUND");
        assert_eq!(
            unknown.body["details"],
            json!({"resource": "approvals", "approvalId": "apr_nope"})
        );
        assert_envelope(&get(&fake, "/approvals").await, 404, "NOT_FOUND");

        let me = get(&fake, "/auth/me").await;
        assert_eq!(
            me.body["token"]["scopes"],
            json!(["payments:read", "proposals:read"])
        );
        assert_eq!(me.body["account"]["memberRole"], "OWNER");

        let requests = fake.requests();
        assert_eq!(requests.len(), 6);
        assert_eq!(requests[0].authorization, None);
        assert_eq!(
            requests[2].authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(requests[2].user_agent.as_deref(), Some("fake-test"));
        assert_eq!(fake.count("GET", "/api/public/v1/approvals/"), 4);
    }

    #[tokio::test]
    async fn opentrain_faults_apply_before_routing_and_are_recorded() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        fake.fail_next(1, 429, Some(7));
        fake.fail_next(1, 500, None);
        let limited = get(&fake, "/auth/me").await;
        assert_envelope(&limited, 429, "RATE_LIMITED");
        assert_eq!(limited.header("retry-after"), Some("7"));
        assert_envelope(&get(&fake, "/no/such/route").await, 500, "INTERNAL_ERROR");
        assert_eq!(get(&fake, "/auth/me").await.status, 200);

        fake.set_down(true);
        assert_envelope(&get(&fake, "/updates").await, 503, "INTERNAL_ERROR");
        fake.set_down(false);
        assert_eq!(get(&fake, "/updates").await.status, 200);
        assert_eq!(fake.requests().len(), 5);
    }

    #[tokio::test]
    async fn opentrain_pending_approval_expires_lazily_on_read() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        let created = fake.create_approval("milestone_fund", Some("ctr_1"), Some("mst_1"), None);
        let id = created["approval"]["id"].as_str().unwrap().to_string();
        assert!(
            id.starts_with("apr_") && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        );

        fake.set_expires_at(&id, Utc::now() - chrono::Duration::seconds(1));
        // Nobody has read it yet: still pending, and no event.
        assert_eq!(fake.approval(&id).unwrap()["status"], "pending");
        assert!(fake.events().is_empty());

        let read = get(&fake, &format!("/approvals/{id}")).await;
        assert_eq!(read.body["approval"]["status"], "expired");
        assert!(read.body["approval"]["resolvedAt"].is_string());
        assert_eq!(fake.approval(&id).unwrap()["status"], "expired");

        let updates = get(&fake, "/updates").await;
        assert_eq!(updates.body["events"][0]["type"], "approval.confirmed");
        assert_eq!(
            updates.body["events"][0]["data"],
            json!({"approvalId": id, "status": "expired"})
        );

        // A second read does not announce it again.
        get(&fake, &format!("/approvals/{id}")).await;
        assert_eq!(fake.events().len(), 1);
    }

    #[tokio::test]
    async fn opentrain_updates_pages_oldest_first_and_validates_params() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        let empty = get(&fake, "/updates").await;
        assert_eq!(
            empty.body,
            json!({"events": [], "nextCursor": null, "hasMore": false})
        );

        let ids: Vec<String> = (0..5)
            .map(|i| {
                fake.push_event(
                    "proposal.received",
                    &format!("prp_{i}"),
                    json!({"proposalId": format!("prp_{i}"), "jobId": "job_1"}),
                )
            })
            .collect();
        assert_eq!(ids[0], "1000");

        let first = get(&fake, "/updates?limit=2").await;
        assert_eq!(first.body["events"].as_array().unwrap().len(), 2);
        assert_eq!(first.body["events"][0]["id"], "1000");
        assert_eq!(first.body["events"][0]["apiVersion"], "v1");
        assert_eq!(first.body["events"][0]["jobId"], "job_1");
        assert_eq!(first.body["nextCursor"], "1001");
        assert_eq!(first.body["hasMore"], true);

        let last = get(&fake, "/updates?cursor=1002&limit=2").await;
        assert_eq!(last.body["nextCursor"], "1004");
        assert_eq!(last.body["hasMore"], false);

        let drained = get(&fake, "/updates?cursor=1004").await;
        assert_eq!(
            drained.body,
            json!({"events": [], "nextCursor": "1004", "hasMore": false})
        );

        for bad in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "cursor=abc",
            "cursor=",
            "cursor=-1",
        ] {
            let reply = get(&fake, &format!("/updates?{bad}")).await;
            assert_envelope(&reply, 400, "BAD_REQUEST");
        }
        assert_eq!(get(&fake, "/updates?limit=200").await.status, 200);
    }

    #[tokio::test]
    async fn opentrain_hire_is_idempotent_and_different_terms_supersede() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        fake.add_simple_proposal("prp_1", "Spanish Sentiment Labeling", "Maria G.");
        let terms_a = json!({"milestone": {"name": "Batch 1", "description": "", "amount": 300, "dueDate": "2026-07-01"}});
        let terms_a_float =
            json!({"milestone": {"name": "Batch 1", "amount": 300.0, "dueDate": "2026-07-01"}});
        let terms_b =
            json!({"milestone": {"name": "Batch 1", "amount": 450, "dueDate": "2026-07-01"}});

        let first = call(
            &fake,
            "POST",
            "/proposals/prp_1/hire",
            Some(TOKEN),
            Some(terms_a),
        )
        .await;
        assert_eq!(first.status, 202);
        assert_eq!(first.body["message"], MSG_HIRE);
        let old = first.body["approval"]["id"].as_str().unwrap().to_string();
        assert_eq!(first.body["approval"]["proposalId"], "prp_1");
        assert_eq!(first.body["approval"]["contractId"], Value::Null);

        let again = call(
            &fake,
            "POST",
            "/proposals/prp_1/hire",
            Some(TOKEN),
            Some(terms_a_float),
        )
        .await;
        assert_eq!(again.status, 202);
        assert_eq!(again.body["approval"]["id"], old.as_str());

        let newer = call(
            &fake,
            "POST",
            "/proposals/prp_1/hire",
            Some(TOKEN),
            Some(terms_b),
        )
        .await;
        let new = newer.body["approval"]["id"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        let superseded = fake.approval(&old).unwrap();
        assert_eq!(superseded["status"], "superseded");
        assert!(superseded["resolvedAt"].is_string());
        assert_eq!(
            fake.events().last().unwrap()["data"],
            json!({"approvalId": old, "status": "superseded"})
        );

        for bad in [
            json!({}),
            json!({"milestone": {"amount": 5}}),
            json!({"milestone": {"name": "x", "amount": 0}}),
            json!({"milestone": {"name": "x", "amount": "5"}}),
        ] {
            assert_envelope(
                &call(
                    &fake,
                    "POST",
                    "/proposals/prp_1/hire",
                    Some(TOKEN),
                    Some(bad),
                )
                .await,
                400,
                "BAD_REQUEST",
            );
        }
        assert_envelope(
            &call(
                &fake,
                "POST",
                "/proposals/prp_x/hire",
                Some(TOKEN),
                Some(json!({})),
            )
            .await,
            404,
            "NOT_FOUND",
        );

        fake.resolve(&new, "confirmed", None);
        let result = fake.approval(&new).unwrap()["result"].clone();
        assert_eq!(result["hired"], true);
        let contract_id = result["contractId"].as_str().unwrap();
        let contract = get(&fake, &format!("/contracts/{contract_id}")).await;
        assert_eq!(contract.body["contract"]["milestones"][0]["amountUsd"], 450);
        assert_eq!(
            contract.body["contract"]["freelancer"]["displayName"],
            "Maria G."
        );
    }

    #[tokio::test]
    async fn opentrain_milestone_and_contract_end_rules() {
        let fake = FakeOpenTrain::start(TOKEN, APP).await;
        fake.add_simple_contract(
            "ctr_1",
            "Labeling",
            "Maria G.",
            &[
                ("mst_1", "Batch 1", 300.0, "NOT_FUNDED"),
                ("mst_2", "Batch 2", 150.5, "ACTIVE_FUNDED"),
            ],
        );
        let post = |path: &'static str| call(&fake, "POST", path, Some(TOKEN), None);

        let fund = post("/milestones/mst_1/fund").await;
        assert_eq!(fund.status, 202);
        assert_eq!(fund.body["message"], MSG_FUND);
        assert_eq!(
            post("/milestones/mst_1/fund").await.body["approval"]["id"],
            fund.body["approval"]["id"]
        );
        let not_fundable = post("/milestones/mst_2/fund").await;
        assert_envelope(&not_fundable, 409, "CONFLICT");
        assert_eq!(
            not_fundable.body["details"]["reason"],
            "milestone_not_fundable"
        );
        assert_eq!(
            post("/milestones/mst_1/approve").await.body["details"]["reason"],
            "milestone_not_funded"
        );
        assert_eq!(post("/milestones/mst_2/approve").await.status, 202);
        assert_envelope(&post("/milestones/mst_9/fund").await, 404, "NOT_FOUND");

        let end = post("/contracts/ctr_1/end").await;
        assert_eq!(end.status, 202);
        assert_eq!(end.body["approval"]["type"], "contract_end");
        fake.resolve(
            end.body["approval"]["id"].as_str().unwrap(),
            "confirmed",
            None,
        );
        assert_eq!(
            post("/contracts/ctr_1/end").await.body["details"]["reason"],
            "contract_ended"
        );

        fake.add_simple_contract(
            "ctr_2",
            "Unfunded",
            "Ana P.",
            &[("mst_3", "Batch", 10.0, "NOT_FUNDED")],
        );
        let immediate = post("/contracts/ctr_2/end").await;
        assert_eq!(immediate.status, 200);
        assert_eq!(
            immediate.body,
            json!({"ok": true, "contractId": "ctr_2", "status": "ended"})
        );
        assert_eq!(fake.contract("ctr_2").unwrap()["status"], "ended");
    }
}
