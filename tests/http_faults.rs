//! `storage_failed` over HTTP: the real `Api`, served in-process on a
//! loopback socket, over a data directory whose fsync the test breaks (the
//! binary has no fault-injection hook, on purpose).

use std::net::SocketAddr;
use std::sync::Arc;

use hotstock::durable::journal::fs::FaultyFs;
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::server::api::{Api, ApiOptions};
use hotstock::SystemClock;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let json = response
        .split_once("\r\n\r\n")
        .map_or(Value::Null, |(_, b)| {
            serde_json::from_str(b).unwrap_or(Value::Null)
        });
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_answers_storage_failed_and_refuses_later_changes() {
    let dir = std::env::temp_dir().join(format!("hotstock-http-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fs = FaultyFs::new();
    let config = DurableConfig::new(&dir, Durability::Sync);
    let (durable, _) =
        DurableEngine::open_with(config, Arc::new(fs.clone()), Arc::new(SystemClock)).unwrap();
    let api = Arc::new(Api::new(
        durable.engine().clone(),
        durable.public_ids().clone(),
        Durability::Sync,
        ApiOptions::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = service_fn(move |request| Arc::clone(&api).handle(request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    assert_eq!(
        call(addr, "PUT", "/v1/skus/tee", &json!({"available": 5}))
            .await
            .0,
        200
    );
    fs.fail_sync_in(1);
    let buy = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true});
    let (status, error) = call(addr, "POST", "/v1/reservations", &buy).await;
    assert_eq!(
        (status, &error["error"]),
        (503, &json!("storage_failed")),
        "never a 2xx that is not on disk"
    );
    let (status, error) = call(addr, "PUT", "/v1/skus/tee", &json!({"available": 9})).await;
    assert_eq!(
        (status, &error["error"]),
        (503, &json!("storage_failed")),
        "later changes are refused"
    );
    // Reads still work.
    assert_eq!(call(addr, "GET", "/v1/skus/tee", &Value::Null).await.0, 200);
    drop(durable);
    let _ = std::fs::remove_dir_all(&dir);
}
