//! Request bodies over `MAX_BODY`: refused with 413 in the endpoint's own
//! error shape, after reading the body to its end and dropping it chunk by
//! chunk (never held). Answering and closing while the client is still
//! sending would make the kernel reset the connection: the client then sees a
//! broken pipe instead of the error (what web servers' lingering close
//! avoids). The draining is bounded, so a client cannot hold a connection
//! open with it.

use super::{ApiError, MAX_BODY};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use std::time::Duration;

/// Past this many bytes read, or this long, the draining stops and the
/// connection closes after the answer.
const DRAIN_MAX: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The body's declared length when it is over the cap.
pub fn oversized(req: &Request) -> Option<u64> {
    let length = req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok()?;
    (length > MAX_BODY as u64).then_some(length)
}

/// Drains `req`'s body (bounded) and answers 413, closing the connection.
pub async fn refuse(req: Request, length: u64) -> Response {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body().into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
    let error = ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: "invalid_request_error",
        message: format!("the request body is {length} bytes; the limit is {MAX_BODY}"),
    };
    let mut response = error.in_dialect_of(&path);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
