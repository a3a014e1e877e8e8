//! Downloads with `Range` (RFC 9110, one range): devices on flaky links
//! resume a multi-gigabyte download instead of starting over.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::{ArtifactError, ArtifactStore};

/// What a `Range` header asks for, resolved against the artifact's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: the whole body with 200. Malformed headers and
    /// several ranges land here too, as RFC 9110 allows a server to ignore
    /// them.
    Full,
    /// Bytes `start..end` (end exclusive) with 206.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Resolves `bytes=a-b`, `bytes=a-` and `bytes=-n` against `size`.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: size.saturating_sub(n),
                end: size,
            },
            None => ByteRange::Full,
        },
        (false, true) => match num(a) {
            Some(start) if start >= size => ByteRange::Unsatisfiable,
            Some(start) => ByteRange::Partial { start, end: size },
            None => ByteRange::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Partial {
                        start,
                        end: last.saturating_add(1).min(size),
                    }
                }
            }
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

/// Answers a GET for an artifact: 200 or 206 with `Content-Range`, 416 for
/// a range past the end, 304 for a matching `If-None-Match`, 404 when the
/// store lacks it. The ETag is the SHA-256, which never changes for a given
/// name, so `If-Range` needs no check beyond equality.
pub async fn serve(store: &dyn ArtifactStore, sha256: &str, headers: &HeaderMap) -> Response {
    match serve_inner(store, sha256, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    store: &dyn ArtifactStore,
    sha256: &str,
    headers: &HeaderMap,
) -> Result<Response, ArtifactError> {
    let meta = store
        .stat(sha256)
        .await?
        .ok_or_else(|| ArtifactError::NotFound(sha256.to_owned()))?;
    let etag = format!("\"{}\"", meta.sha256);
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if header_str(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(
            with_common(Response::builder().status(StatusCode::NOT_MODIFIED), &etag)
                .body(Body::empty())
                .expect("valid response"),
        );
    }
    // A stale If-Range means the client's partial copy is of other bytes:
    // send everything.
    let range_header = match header_str(header::IF_RANGE) {
        Some(v) if v.trim() != etag => None,
        _ => header_str(header::RANGE),
    };
    let size = meta.size;
    let (status, start, end) = match parse_range(range_header, size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => {
            return Ok(with_common(
                Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}")),
                &etag,
            )
            .body(Body::empty())
            .expect("valid response"));
        }
    };
    let stream = store
        .read(sha256, start..end)
        .await?
        .ok_or_else(|| ArtifactError::NotFound(sha256.to_owned()))?;
    let mut builder = with_common(Response::builder().status(status), &etag)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(builder
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

fn with_common(b: http::response::Builder, etag: &str) -> http::response::Builder {
    b.header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteRange::*;

    #[test]
    fn ranges() {
        let p = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(p("bytes=0-9"), Partial { start: 0, end: 10 });
        assert_eq!(
            p("bytes=90-"),
            Partial {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            p("bytes=-10"),
            Partial {
                start: 90,
                end: 100
            }
        );
        assert_eq!(p("bytes=-1000"), Partial { start: 0, end: 100 });
        assert_eq!(
            p("bytes=50-1000"),
            Partial {
                start: 50,
                end: 100
            }
        );
        assert_eq!(
            p("bytes=99-99"),
            Partial {
                start: 99,
                end: 100
            }
        );
        assert_eq!(p("bytes=100-"), Unsatisfiable);
        assert_eq!(p("bytes=100-200"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
        assert_eq!(p("bytes=9-0"), Full, "reversed is invalid, so ignored");
        assert_eq!(p("bytes=0-1,5-6"), Full, "several ranges are ignored");
        assert_eq!(p("items=0-1"), Full);
        assert_eq!(p("bytes=a-b"), Full);
        assert_eq!(p("bytes=-"), Full);
    }
}
