//! `demo --tools`: an example tools file and the example webhook it points at, served in the same
//! process on 127.0.0.1:0. The webhook checks the Standard Webhooks signature as any receiver
//! should, prints the request and answers with a made-up order.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::tools::signing::{Signer, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};

/// The function the example declares.
pub const TOOL: &str = "lookup_order";
/// The arguments the stand-in calls it with.
pub const ARGUMENTS: &str = r#"{"order_id":"427"}"#;

/// A fresh `whsec_…` secret: 32 random bytes.
pub fn fresh_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("whsec_{encoded}")
}

/// Serve the example webhook (signed with `secret`); returns its URL.
pub async fn serve(secret: &str) -> anyhow::Result<String> {
    let signer = Signer::from_secret(secret).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/tools/{TOOL}", listener.local_addr()?);
    let app = Router::new()
        .route(&format!("/tools/{TOOL}"), post(lookup_order))
        .with_state(signer);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the example webhook stopped");
        }
    });
    Ok(url)
}

/// Write the example tools file (one function at `url`) into `dir`; returns its path.
pub fn write_tools_file(dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let file = json!({"functions": [{
        "name": TOOL,
        "description": "Find an order by its number; tell the caller its status.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        "url": url,
        "timeout_ms": 5000
    }]});
    std::fs::create_dir_all(dir)?;
    let path = dir.join("demo-tools.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file)?)?;
    Ok(path)
}

/// Verify, print, answer.
async fn lookup_order(
    State(signer): State<Signer>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, StatusCode> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(HEADER_ID),
        header(HEADER_TIMESTAMP).and_then(|t| t.parse::<i64>().ok()),
        header(HEADER_SIGNATURE),
    ) else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    let expected = signer.sign(id, timestamp, &body);
    let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() <= 300;
    if !fresh || !signatures.split(' ').any(|s| s == expected) {
        println!("\nExample webhook: REFUSED a request with a bad signature");
        return Err(StatusCode::UNAUTHORIZED);
    }
    let request: Value = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    println!("\nExample webhook: signed request verified ({HEADER_ID}: {id}):");
    println!(
        "{}",
        serde_json::to_string_pretty(&request).unwrap_or_default()
    );
    let order = request["arguments"]["order_id"].clone();
    Ok(Json(
        json!({"order_id": order, "status": "shipped", "eta": "tomorrow"}),
    ))
}
