//! The upstream over `wss://`: rustls with the platform roots, where `SSL_CERT_FILE` replaces the
//! platform's bundle. A local TLS WebSocket server with a self-signed CA stands in for OpenAI.
//!
//! This binary holds one test because it sets `SSL_CERT_FILE` for the whole process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use twilio_realtime_relay::app::{self, AppState};
use twilio_realtime_relay::audio;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::sim::{self, CallOptions};

/// A certificate authority and a `localhost` server certificate it signed.
struct Pki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

fn pki(name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let server = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.der().clone(),
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
    }
}

/// What a [`tls_upstream`] connection did.
#[derive(Debug)]
enum Seen {
    /// The TLS handshake failed with this error.
    TlsFailed(String),
    /// The first client event after the WebSocket upgrade.
    FirstEvent(Value),
}

/// A TLS WebSocket server on `127.0.0.1:0` presenting `pki`'s certificate. Reports each
/// connection's failed handshake or first client event; keeps connections open until the
/// client leaves.
async fn tls_upstream(pki: &Pki) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .expect("server certificate");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = seen.send(Seen::TlsFailed(e.to_string()));
                        return;
                    }
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                let mut first = true;
                while let Some(Ok(msg)) = ws.next().await {
                    if let (true, Message::Text(text)) = (first, &msg) {
                        first = false;
                        let event = serde_json::from_str(text.as_str()).unwrap_or_default();
                        let _ = seen.send(Seen::FirstEvent(event));
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the TLS server saw the relay within 5 s")
        .expect("server running")
}

/// The relay on `127.0.0.1:0` with its upstream at `wss://localhost:{port}/v1/realtime`.
async fn relay(upstream_port: u16, dir: &TempDir) -> (AppState, SocketAddr, CancellationToken) {
    let config = Config {
        openai_api_key: Some("sk-test".into()),
        openai_realtime_url: format!("wss://localhost:{upstream_port}/v1/realtime"),
        transcript_dir: dir.path().to_path_buf(),
        database_url: format!("sqlite://{}/relay.db", dir.path().display()),
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(config);
    let stop = CancellationToken::new();
    tokio::spawn(app::serve(
        listener,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));
    (state, addr, stop)
}

fn call(addr: SocketAddr) -> CallOptions {
    let pcm: Vec<i16> = (0..200 * 8)
        .map(|n| (8000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16)
        .collect();
    let mut opts = CallOptions::new(
        format!("ws://{addr}/media-stream"),
        vec![audio::encode(&pcm)],
    );
    opts.quiet_ms = 1_000;
    opts.reply_timeout_ms = 300;
    opts
}

#[tokio::test]
async fn the_upstream_is_reached_over_wss_trusting_exactly_the_cas_in_ssl_cert_file() {
    let trusted = pki("trusted");
    let untrusted = pki("untrusted");
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &trusted.ca_pem).expect("write CA bundle");
    // This binary has this one test: the process environment is ours.
    std::env::set_var("SSL_CERT_FILE", &bundle);

    let (good_addr, mut good) = tls_upstream(&trusted).await;
    let (state, addr, stop) = relay(good_addr.port(), &dir).await;
    let report = sim::run(call(addr)).await.expect("call");
    match next_seen(&mut good).await {
        Seen::FirstEvent(event) => assert_eq!(event["type"], "session.update", "{event}"),
        other => panic!("the relay did not talk to the trusted server: {other:?}"),
    }
    assert!(!report.closed_by_server, "{}", report.summary());
    assert_eq!(state.stats.errors(), 0);
    stop.cancel();

    // Same process, same SSL_CERT_FILE: a server whose CA is not in it is refused.
    let (bad_addr, mut bad) = tls_upstream(&untrusted).await;
    let (state, addr, stop) = relay(bad_addr.port(), &dir).await;
    let report = sim::run(call(addr)).await.expect("call");
    match next_seen(&mut bad).await {
        Seen::TlsFailed(error) => assert!(error.contains("UnknownCA"), "{error}"),
        other => panic!("the relay trusted a server outside SSL_CERT_FILE: {other:?}"),
    }
    assert!(
        report.closed_by_server,
        "Twilio's socket is closed so it plays the fallback"
    );
    assert!(report.heard.is_empty());
    assert_eq!(state.stats.errors(), 1, "the failed connection is counted");
    stop.cancel();
}
