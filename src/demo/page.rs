//! The simulated approval page. Every message's link is `<app_url>/approvals/<id>`; in the demo,
//! `app_url` is this server on loopback, and the page says plainly that it is the demo and what
//! the real page would be.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use countersign_fakes::FakeOpenTrain;

/// The simulated approval page: `<app_url>/approvals/<id>` for the demo's approvals, saying
/// plainly that it is the demo and where the real page would be.
pub(super) fn page_router(opentrain: FakeOpenTrain) -> Router {
    Router::new()
        .route("/approvals/{id}", get(approval_page))
        .fallback(|| async { (StatusCode::NOT_FOUND, Html(page("Not a demo approval", ""))) })
        .with_state(opentrain)
}

async fn approval_page(State(opentrain): State<FakeOpenTrain>, Path(id): Path<String>) -> Response {
    let Some(approval) = opentrain.approval(&id) else {
        return (StatusCode::NOT_FOUND, Html(page("Not a demo approval", ""))).into_response();
    };
    let field = |k: &str| teloxide::utils::html::escape(approval[k].as_str().unwrap_or("?"));
    let body = format!(
        "<p>Approval <code>{}</code> ({}) is <b>{}</b>.</p>\
         <p>In real life this link opens the approval in the OpenTrain app, where the owner signs \
         in and confirms or declines it. Here nothing is real and no money moves: the demo \
         resolves each sample by itself. Watch the message change.</p>",
        field("id"),
        field("type"),
        field("status"),
    );
    Html(page("countersign demo: a simulated approval", &body)).into_response()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p><b>DEMO</b>: served by <code>countersign demo</code>.</p>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::super::seed;
    use super::*;

    #[tokio::test]
    async fn the_approval_page_says_it_is_the_demo_and_shows_the_status() {
        let pages = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_url = format!("http://{}", pages.local_addr().unwrap());
        let opentrain = FakeOpenTrain::start("ot_pat_page", &app_url).await;
        let samples = seed(&opentrain, Duration::from_secs(60));
        opentrain.resolve(&samples[1].id, "declined", None);
        tokio::spawn(axum::serve(pages, page_router(opentrain)).into_future());
        let client = reqwest::Client::new();

        // The link every message shows is exactly the page that answers.
        let link = samples[1].body["approval"]["approvalUrl"].as_str().unwrap();
        assert_eq!(link, format!("{app_url}/approvals/{}", samples[1].id));
        let page = client.get(link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("DEMO") && html.contains("<b>declined</b>"),
            "{html}"
        );

        let missing = client
            .get(format!("{app_url}/approvals/apr_nope"))
            .send()
            .await;
        assert_eq!(missing.unwrap().status(), 404);
        let elsewhere = client.get(format!("{app_url}/admin")).send().await;
        assert_eq!(elsewhere.unwrap().status(), 404);
    }
}
