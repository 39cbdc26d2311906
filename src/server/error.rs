//! Errors as the APIs send them: one `ApiError` (status, kind, message),
//! rendered in OpenAI's shape, or in the shape of the API a path belongs to
//! (Anthropic's `AnthropicError`, Ollama's `OllamaError` wrap it).

use super::{anthropic, ollama};
use crate::engine::protocol::{EngineError, ErrorKind};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error as the APIs send it: a status and `{"error": {"message", "type"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "invalid_request_error", message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "server_error", message: m.into() }
    }
    pub fn model_failed(m: String) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "server_error", message: format!("the model did not load: {m}") }
    }
    pub fn engine(e: EngineError) -> Self {
        match e.kind {
            ErrorKind::BadRequest => Self::bad_request(e.message),
            // A retry finds the model loaded again (clients retry 503s themselves).
            ErrorKind::Unavailable => ApiError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "server_error", message: e.message },
            _ => Self::internal(e.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"message": self.message, "type": self.kind}}))).into_response()
    }
}

impl ApiError {
    /// The error in the shape of the API `path` belongs to (Anthropic's for
    /// `/v1/messages`, Ollama's for `/api/`, else OpenAI's), for refusals
    /// made before a route runs (host, key, size): each SDK reads its own.
    pub fn in_dialect_of(self, path: &str) -> Response {
        if path.starts_with("/v1/messages") {
            anthropic::AnthropicError::from(self).into_response()
        } else if path.starts_with("/api/") {
            ollama::OllamaError::from(self).into_response()
        } else {
            self.into_response()
        }
    }
}
