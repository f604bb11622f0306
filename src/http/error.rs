//! `AppError`: every HTTP error as JSON, `{"error": message, "code": code}`, with its status.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An HTTP error answered as JSON: `{"error": message, "code": code}`.
#[derive(Debug)]
pub(crate) struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// Set on 401s: `WWW-Authenticate: Bearer`.
    challenge: bool,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 401 for a refused token or key, with the `Bearer` challenge (RFC 6750).
    pub(crate) fn unauthorized(message: impl std::fmt::Display) -> Self {
        crate::metrics::METRICS.refuse("unauthorized");
        Self {
            challenge: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        }
    }

    /// 403 for an identity that may not do this.
    pub(crate) fn forbidden(message: impl std::fmt::Display) -> Self {
        crate::metrics::METRICS.refuse("forbidden");
        Self::new(StatusCode::FORBIDDEN, "forbidden", message.to_string())
    }

    /// 401 when anonymous (a token might help), else 403, for `action` in `room`.
    pub(crate) fn not_allowed(
        who: &crate::auth::Principal,
        room: &str,
        action: crate::auth::Action,
    ) -> Self {
        match who {
            crate::auth::Principal::Anonymous => Self::unauthorized(format!(
                "{action} in {room} needs a token (Authorization: Bearer or ?token=)"
            )),
            _ => Self::forbidden(format!("your token does not allow {action} in {room}")),
        }
    }

    /// 400 with what is wrong.
    pub(crate) fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message.to_string())
    }

    /// 400 for a room or nick name that breaks the naming rules: `bad_name`, as the
    /// structured WebSocket, the chat's `ERR` and gRPC's message say it.
    pub(crate) fn bad_name(error: crate::protocol::names::NameError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_name", error.to_string())
    }

    /// 429 with `Retry-After`: this address failed to sign in too often lately.
    pub(crate) fn sign_in_throttled(wait: Duration) -> Self {
        crate::metrics::METRICS.refuse("rate_limited");
        let secs = wait.as_secs().max(1);
        Self {
            retry_after: Some(Duration::from_secs(secs)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many failed sign-ins from your address; try again in {secs} s"),
            )
        }
    }

    /// 503: answers already built for this connection or address wait to be read, up to the
    /// budget (`http::unsent`).
    pub(crate) fn unsent_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unsent_full",
            "too many answers to this connection or address wait to be read; read them, or              ask for fewer at once",
        )
    }

    /// 413 for a body over the limit.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        )
    }

    /// 408 for a body that did not arrive in time (`limits.http_body_timeout`).
    pub(crate) fn body_timeout(timeout: Duration) -> Self {
        crate::metrics::METRICS.refuse("body_timeout");
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )
    }

    /// A room limit: 409 for a full room, 429 for too many created by this client, 503
    /// for too many on the server.
    pub(crate) fn room(error: crate::hub::RoomError) -> Self {
        use crate::hub::RoomError;
        let status = match error {
            RoomError::Full(_) => StatusCode::CONFLICT,
            RoomError::TooManyByYou
            | RoomError::TooManyJoined(_)
            | RoomError::TooManyFromAddress => StatusCode::TOO_MANY_REQUESTS,
            RoomError::TooMany => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.code(), error.to_string())
    }

    /// The answer to a refused one-shot request (`session::Refused`); `who` decides whether
    /// a missing grant is 401 (signing in may help) or 403.
    pub(crate) fn refused(who: &crate::auth::Principal, refused: crate::session::Refused) -> Self {
        use crate::session::{MAX_KEY, Refused};
        match refused {
            Refused::NotAllowed { room, action } => Self::not_allowed(who, &room, action),
            Refused::RateLimited(wait) => Self::rate_limited(wait),
            Refused::Empty => Self::bad_request("the message text is empty"),
            Refused::KeyTooLong => {
                Self::bad_request(format!("Idempotency-Key longer than {MAX_KEY} bytes"))
            }
            Refused::Room(error) => Self::room(error),
            Refused::Unavailable(error) => Self::unavailable(error),
            Refused::DeadlineExceeded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "message not stored in time",
            ),
            Refused::Presence(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                refused.to_string(),
            ),
        }
    }

    /// 429 with `Retry-After`.
    pub(crate) fn rate_limited(wait: Duration) -> Self {
        crate::metrics::METRICS.refuse("rate_limited");
        Self {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many messages; slow down",
            )
        }
    }

    /// 503 when a message cannot be stored.
    pub(crate) fn unavailable(error: crate::store::StoreError) -> Self {
        crate::metrics::METRICS.refuse("storage");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("message not stored: {error}"),
        )
    }

    /// 503 when a connection cap is reached, naming which.
    pub(crate) fn full(full: crate::transport::limits::Full) -> Self {
        crate::metrics::METRICS.refuse(full.code());
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            full.code(),
            full.to_string(),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for AppError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

/// A refused WebSocket handshake, answered like every other HTTP refusal.
impl IntoResponse for crate::transport::ws::Refused {
    fn into_response(self) -> Response {
        use crate::transport::ws::Refused;
        match self {
            Refused::BadRequest(why) => AppError::bad_request(why).into_response(),
            Refused::BadName(why) => {
                AppError::new(StatusCode::BAD_REQUEST, "bad_name", why).into_response()
            }
            Refused::Unauthorized(why) => AppError::unauthorized(why).into_response(),
            Refused::Forbidden(why) => AppError::forbidden(why).into_response(),
            Refused::Full(full) => AppError::full(full).into_response(),
            Refused::UpgradeRequired(why) => {
                let mut res = AppError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", why)
                    .into_response();
                // RFC 6455 section 4.4: name the version this server speaks.
                res.headers_mut()
                    .insert("sec-websocket-version", HeaderValue::from_static("13"));
                res
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.status, code = self.code, message = %self.message, "http error");
        let body = Json(serde_json::json!({"error": self.message, "code": self.code}));
        let mut res = (self.status, body).into_response();
        if self.challenge {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
