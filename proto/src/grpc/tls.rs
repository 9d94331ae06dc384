//! Mutual TLS between the processes of a cluster: gateways and routers,
//! routers and routers, and operators' tools. A process has one cluster
//! identity, installed at start ([`ClusterTls::install`]); every endpoint
//! ([`endpoint`]) and server ([`server_config`]) of the cluster's gRPC then
//! uses it: `https`, a certificate signed by the cluster's CA on both sides.
//! Without one, the cluster speaks plain `http` (a private network).

use std::sync::OnceLock;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A process's cluster identity: its certificate and key, the CA that
/// signs every member's, and the name routers' certificates carry (when
/// not the host each address names).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    ca: Certificate,
    identity: Identity,
    domain: Option<String>,
}

static INSTALLED: OnceLock<ClusterTls> = OnceLock::new();

impl ClusterTls {
    /// An identity from PEM: the CA's certificate, this process's
    /// certificate (chain) and its private key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8], domain: Option<String>) -> ClusterTls {
        ClusterTls { ca: Certificate::from_pem(ca), identity: Identity::from_pem(cert, key), domain }
    }

    /// Makes this the process's cluster identity; a second one is refused.
    pub fn install(self) -> Result<(), &'static str> {
        INSTALLED.set(self).map_err(|_| "a cluster TLS identity is installed already")
    }
}

/// Whether the cluster's gRPC uses TLS in this process.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// The `host:port` of a router address given as `http://host:port`,
/// `https://host:port` or `host:port`.
pub fn authority(address: &str) -> &str {
    address.strip_prefix("https://").or_else(|| address.strip_prefix("http://")).unwrap_or(address)
}

/// An endpoint for the cluster member at `address` (`host:port`, or an
/// `http://` or `https://` URL): over TLS with the installed identity when
/// there is one, else plain.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    let authority = authority(address);
    let Some(tls) = INSTALLED.get() else {
        return Endpoint::from_shared(format!("http://{authority}")).map_err(|e| format!("{address}: {e}"));
    };
    let mut config = ClientTlsConfig::new().ca_certificate(tls.ca.clone()).identity(tls.identity.clone());
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    Endpoint::from_shared(format!("https://{authority}"))
        .and_then(|endpoint| endpoint.tls_config(config))
        .map_err(|e| format!("{address}: {e}"))
}

/// The server side when an identity is installed: this process's
/// certificate, and client certificates required, signed by the CA.
pub fn server_config() -> Option<ServerTlsConfig> {
    INSTALLED
        .get()
        .map(|tls| ServerTlsConfig::new().identity(tls.identity.clone()).client_ca_root(tls.ca.clone()))
}
