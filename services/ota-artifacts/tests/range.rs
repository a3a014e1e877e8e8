//! Downloads over a real socket: a disk store behind an axum route, read
//! with reqwest.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use ota_artifacts::{hosted_url, serve, ArtifactStore, DiskStore, StoredArtifact};

struct Server {
    base: String,
    meta: StoredArtifact,
    body: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(DiskStore::new(dir.path()));
    // 300 KiB of a pattern: several read chunks, and every offset checkable.
    let body: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = store
        .put(futures::stream::iter(chunks).boxed())
        .await
        .unwrap();
    let app =
        axum::Router::new()
            .route(
                "/artifacts/{sha}",
                get(
                    |State(s): State<Arc<dyn ArtifactStore>>,
                     Path(sha): Path<String>,
                     h: HeaderMap| async move { serve(s.as_ref(), &sha, &h).await },
                ),
            )
            .with_state(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base,
        meta,
        body,
        _dir: dir,
    }
}

async fn get_range(s: &Server, range: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(hosted_url(&s.base, &s.meta.sha256, None));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn full_download_carries_etag_and_accept_ranges() {
    let s = start().await;
    let res = get_range(&s, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["etag"], format!("\"{}\"", s.meta.sha256));
    assert_eq!(h["content-length"], s.body.len().to_string());
    assert_eq!(res.bytes().await.unwrap(), s.body);
}

#[tokio::test]
async fn the_three_range_forms() {
    let s = start().await;
    let n = s.body.len();
    for (range, start, end) in [
        ("bytes=100-199", 100, 200),
        ("bytes=200000-", 200000, n),
        ("bytes=-1000", n - 1000, n),
        ("bytes=0-99999999", 0, n),
    ] {
        let res = get_range(&s, Some(range)).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{}/{n}", end - 1),
            "{range}"
        );
        assert_eq!(res.bytes().await.unwrap(), &s.body[start..end], "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_get_416() {
    let s = start().await;
    let n = s.body.len();
    for range in [format!("bytes={n}-"), "bytes=-0".to_owned()] {
        let res = get_range(&s, Some(&range)).await;
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(res.headers()["content-range"], format!("bytes */{n}"));
    }
}

#[tokio::test]
async fn conditional_requests_and_missing_artifacts() {
    let s = start().await;
    let etag = format!("\"{}\"", s.meta.sha256);
    let client = reqwest::Client::new();
    let url = hosted_url(&s.base, &s.meta.sha256, None);
    let res = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    // A stale If-Range gets the whole body, a current one the range.
    let res = client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), &s.body[..10]);

    let res = client
        .get(hosted_url(&s.base, &"0".repeat(64), None))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let res = client
        .get(format!("{}/artifacts/nothex", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}
