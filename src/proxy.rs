//! Proxy mode (SPEC §3.5): forwards agents' OpenTrain requests and captures approvals on the way.
//! (Being written: see issue #7. Until then `proxy.enabled = true` is refused at start-up.)

use std::sync::Arc;

use reqwest::Url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub struct Proxy {
    pub store: Store,
    /// `opentrain.app_url`, for validating captured approvals like hook submissions.
    pub app_url: String,
    /// The OpenTrain origin (scheme, host and port of `opentrain.api_url`).
    pub origin: Url,
}

impl Proxy {
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        drop(listener);
        cancel.cancelled().await;
        Ok(())
    }
}
