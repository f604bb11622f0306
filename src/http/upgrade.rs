//! The WebSocket upgrades as HTTP routes: their OpenAPI description. The handshake and the
//! connections are `crate::transport::ws`; these handlers only hand each request to it, so
//! that the transport names nothing of the HTTP layer.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::Response;

use super::openapi::UpgradeRefusals;
use crate::transport::context::Context;
use crate::transport::ws::{self, ChatQuery};

/// The headers of a WebSocket upgrade (RFC 6455 section 4.1), for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct UpgradeHeaders {
    /// `websocket`.
    #[param(rename = "Upgrade")]
    upgrade: String,
    /// `Upgrade`.
    #[param(rename = "Connection")]
    connection: String,
    /// 16 random bytes, base64.
    #[param(rename = "Sec-WebSocket-Key", pattern = "^[A-Za-z0-9+/]{22}==$")]
    sec_websocket_key: String,
    /// `13` (426 otherwise).
    #[param(rename = "Sec-WebSocket-Version", pattern = "^13$")]
    sec_websocket_version: String,
    /// Subprotocols offered: `/ws` accepts `switchboard.v1`, `/mqtt` accepts `mqtt`.
    #[param(rename = "Sec-WebSocket-Protocol")]
    sec_websocket_protocol: Option<String>,
}

/// `GET /ws`: the chat (`transport::ws::chat`).
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    summary = "The chat over WebSocket",
    description = "Plain mode is the seed's: text in, `nick: text` out. Structured mode \
                   (subprotocol switchboard.v1, or ?format=json) speaks the JSON envelopes of \
                   docs/PROTOCOL.md. Also over HTTP/2 as an extended CONNECT (RFC 8441), \
                   answered 200.",
    params(ChatQuery, UpgradeHeaders),
    responses(
        (status = 101, description = "Upgraded: the chat's frames follow"),
        UpgradeRefusals,
    )
)]
pub(crate) async fn chat(
    state: State<Arc<Context>>,
    addr: ConnectInfo<SocketAddr>,
    query: Result<Query<ChatQuery>, QueryRejection>,
    req: Request,
) -> Response {
    ws::chat(state, addr, query, req).await
}

/// `GET /mqtt`: MQTT over WebSocket (`transport::ws::mqtt`).
#[utoipa::path(
    get,
    path = "/mqtt",
    tag = "websocket",
    summary = "MQTT 3.1.1/5.0 over WebSocket (subprotocol mqtt)",
    description = "Also over HTTP/2 as an extended CONNECT (RFC 8441), answered 200.",
    params(UpgradeHeaders),
    responses(
        (status = 101, description = "Upgraded: MQTT packets in binary frames"),
        UpgradeRefusals,
    )
)]
pub(crate) async fn mqtt(
    state: State<Arc<Context>>,
    addr: ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    ws::mqtt(state, addr, req).await
}

/// `GET /echo`: the conformance suite's echo (`transport::ws::echo`).
#[utoipa::path(
    get,
    path = "/echo",
    tag = "websocket",
    summary = "WebSocket echo (the conformance suite's endpoint)",
    description = "Also over HTTP/2 as an extended CONNECT (RFC 8441), answered 200.",
    params(UpgradeHeaders),
    responses(
        (status = 101, description = "Upgraded: every message comes back unchanged"),
        UpgradeRefusals,
    )
)]
pub(crate) async fn echo(state: State<Arc<Context>>, req: Request) -> Response {
    ws::echo(state, req).await
}
