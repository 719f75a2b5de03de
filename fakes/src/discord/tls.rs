//! How the fake Discord is reached: an accept loop per listener (plain HTTP, or HTTPS with a
//! certificate for `discord.com` signed by a throwaway CA made once per process), each connection
//! served by hyper on its own task so that the host can drop them all on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::DISCORD_HOST;
use super::routes::OverTls;

/// A client that connects and never finishes the TLS handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The live connections of one fake, and whether its host is reachable at all.
#[derive(Default)]
pub(super) struct Network {
    unreachable: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

impl Network {
    pub fn set_unreachable(&self, unreachable: bool) {
        let mut connections = self.connections();
        self.unreachable.store(unreachable, Ordering::SeqCst);
        if unreachable {
            for connection in connections.drain(..) {
                connection.abort();
            }
        }
    }

    /// Keeps a new connection, or drops it at once while the host is unreachable.
    fn admit(&self, connection: AbortHandle) {
        let mut connections = self.connections();
        if self.unreachable.load(Ordering::SeqCst) {
            connection.abort();
            return;
        }
        connections.retain(|c| !c.is_finished());
        connections.push(connection);
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Material {
    ca_der: Vec<u8>,
    acceptor: TlsAcceptor,
}

/// A CA, and a certificate for `discord.com` it signed; made once per process (key generation
/// is the slow part).
fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let ca_key = KeyPair::generate().expect("generate the fake CA's key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "countersign-fakes test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the fake CA");
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("generate the fake Discord's key");
        let mut leaf =
            CertificateParams::new(vec![DISCORD_HOST.to_owned()]).expect("leaf parameters");
        leaf.distinguished_name
            .push(DnType::CommonName, DISCORD_HOST);
        let cert = leaf
            .signed_by(&key, &issuer)
            .expect("sign the fake Discord's certificate");

        let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], private_key)
            .expect("TLS server configuration");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Material {
            ca_der: ca_cert.der().to_vec(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    })
}

pub(super) fn ca_certificate_der() -> Vec<u8> {
    material().ca_der.clone()
}

pub(super) fn acceptor() -> TlsAcceptor {
    material().acceptor.clone()
}

/// Binds 127.0.0.1:0 and serves `router` there (over TLS when `tls` is given) until the runtime
/// ends. Returns the bound address.
pub(super) async fn serve(
    router: Router,
    tls: Option<TlsAcceptor>,
    network: Arc<Network>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the fake Discord");
    let addr = listener
        .local_addr()
        .expect("local address of the fake Discord");
    let router = router.layer(Extension(OverTls(tls.is_some())));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors or similar: let the moment pass.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            let connection = tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                        if let Ok(Ok(stream)) = handshake {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
            network.admit(connection.abort_handle());
        }
    });
    addr
}
