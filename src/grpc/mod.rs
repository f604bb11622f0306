//! gRPC (tonic): the `switchboard.v1.Switchboard` service of
//! `proto/switchboard/v1/switchboard.proto`, the standard health service, and server
//! reflection, on their own listener (`--grpc`, served by `crate::http::serve`'s HTTP/2 loop
//! with its socket budget, caps and TLS).
//!
//! Unary calls (`unary.rs`) are HTTP's publish, history, presence and room list with gRPC
//! statuses. The two streams (`stream.rs`) are sessions like every other transport's: a
//! `Subscribe` only joins, a `Chat` lowers each `ClientFrame` into a `Request` for
//! `Session::apply`; both drain the session's `Outbox` in the `Wire::Grpc` form, an event's
//! protobuf message encoded once and shared (`Encoded`).
//!
//! Who the caller is comes from metadata (`authorization: Bearer`, `x-api-key`), decided
//! once per call by `admit` before any handler runs; a credential that does not verify is
//! UNAUTHENTICATED, never anonymous.

mod stream;
mod unary;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes};
use tonic::Status;

use crate::auth::{Action, Principal};
use crate::transport::context::Context;

/// The generated messages and service (`build.rs`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("switchboard.v1");
}

/// The service's descriptors, for reflection.
const DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("switchboard_descriptor");

/// The gRPC path every call of the service starts with.
const SERVICE_PATH: &str = "/switchboard.v1.Switchboard/";

/// The encoded size of a unary reply, set in its response's extensions: a gRPC body does
/// not know its size, and the HTTP/2 loop holds this many bytes of the unsent-answer budget
/// (`http::unsent`) until the client takes the reply; refused, the call ends with
/// `RESOURCE_EXHAUSTED`. Without it 10 connections granting no window, with 1,280
/// `History(limit=1000)` calls, grew the server by 980 MB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplySize(pub usize);

/// A `switchboard.v1.Event` already encoded: the server never builds an event message per
/// stream. It is the room event's shared `Form::Grpc` bytes (or an answer's own), written
/// into tonic's buffer as they are. The server only sends events, so decoding one (which
/// tonic never asks of it) reads nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded(pub Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Bytes each stream's encoder and decoder start with (tonic's default is 8 KiB each). A
/// batch of events or a large message grows the buffer as it needs; a quiet stream keeps
/// only this much.
const STREAM_BUFFER: usize = 1024;
/// Encoded bytes after which a response stream hands what it has to HTTP/2 (tonic's default).
const YIELD_AFTER: usize = 32 * 1024;

fn buffers() -> tonic::codec::BufferSettings {
    tonic::codec::BufferSettings::new(STREAM_BUFFER, YIELD_AFTER)
}

/// tonic's prost codec (`tonic_prost`) with `STREAM_BUFFER`-sized buffers: the generated
/// service uses it (`build.rs`, `codec_path`).
#[derive(Debug)]
pub struct Codec<T, U>(std::marker::PhantomData<fn() -> (T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(buffers())
    }
}

/// The service's state: what every call shares.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    shared: Arc<Context>,
}

#[tonic::async_trait]
impl pb::switchboard_server::Switchboard for Service {
    async fn publish(
        &self,
        request: tonic::Request<pb::PublishRequest>,
    ) -> Result<tonic::Response<pb::PublishReply>, Status> {
        self.publish_call(request).await
    }

    async fn history(
        &self,
        request: tonic::Request<pb::HistoryRequest>,
    ) -> Result<tonic::Response<pb::HistoryReply>, Status> {
        self.history_call(request).await
    }

    async fn presence(
        &self,
        request: tonic::Request<pb::PresenceRequest>,
    ) -> Result<tonic::Response<pb::PresenceReply>, Status> {
        self.presence_call(request).await
    }

    async fn rooms(
        &self,
        request: tonic::Request<pb::RoomsRequest>,
    ) -> Result<tonic::Response<pb::RoomsReply>, Status> {
        self.rooms_call(request).await
    }

    type SubscribeStream = stream::Events;

    async fn subscribe(
        &self,
        request: tonic::Request<pb::SubscribeRequest>,
    ) -> Result<tonic::Response<stream::Events>, Status> {
        self.subscribe_call(request).await
    }

    type ChatStream = stream::Events;

    async fn chat(
        &self,
        request: tonic::Request<tonic::Streaming<pb::ClientFrame>>,
    ) -> Result<tonic::Response<stream::Events>, Status> {
        self.chat_call(request).await
    }
}

/// What `admit` learned of a call, in its extensions.
#[derive(Debug, Clone)]
struct Caller {
    principal: Principal,
    addr: Option<SocketAddr>,
    /// From `grpc-timeout`: when the call must be over.
    deadline: Option<tokio::time::Instant>,
}

/// The router serving the service, health and reflection on the gRPC listener.
pub(crate) fn router(shared: Arc<Context>) -> axum::Router {
    let limit = shared.config.ws_max_message + 1024;
    let service = pb::switchboard_server::SwitchboardServer::new(Service {
        shared: Arc::clone(&shared),
    })
    .max_decoding_message_size(limit);
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (v1, v1alpha) = match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => (v1, v1alpha),
        (Err(error), _) | (_, Err(error)) => {
            // The descriptors are compiled in; this is a build mistake, shown at start.
            tracing::error!(%error, "grpc reflection unavailable");
            return tonic::service::Routes::new(service)
                .add_service(health_service)
                .into_axum_router();
        }
    };
    let stopping = shared.shutdown.clone();
    shared.tasks.spawn(async move {
        health
            .set_serving::<pb::switchboard_server::SwitchboardServer<Service>>()
            .await;
        stopping.cancelled().await;
        // Load balancers polling health steer away while the streams finish.
        health
            .set_not_serving::<pb::switchboard_server::SwitchboardServer<Service>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });
    tonic::service::Routes::new(service)
        .add_service(health_service)
        .add_service(v1)
        .add_service(v1alpha)
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(shared, admit))
}

/// Decides who calls the service (once per call, from its metadata) and its deadline. A
/// credential that does not verify ends the call with UNAUTHENTICATED before any handler.
async fn admit(State(shared): State<Arc<Context>>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(SERVICE_PATH) {
        return next.run(req).await;
    }
    let (token, api_key) = crate::auth::presented(req.headers(), None);
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = match shared.hub.auth().principal_at(ip, token, api_key) {
        Ok(principal) => principal,
        Err(error @ crate::auth::AuthError::Throttled(_)) => {
            tracing::info!(?ip, %error, "grpc sign-in throttled");
            return Status::resource_exhausted(error.to_string()).into_http();
        }
        Err(error) => {
            tracing::debug!(path = req.uri().path(), %error, "grpc credentials refused");
            return Status::unauthenticated(format!("credentials refused: {error}")).into_http();
        }
    };
    let deadline = match req.headers().get("grpc-timeout").map(parse_timeout) {
        None => None,
        Some(Some(timeout)) => Some(tokio::time::Instant::now() + timeout),
        Some(None) => return Status::invalid_argument("malformed grpc-timeout").into_http(),
    };
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    req.extensions_mut().insert(Caller {
        principal,
        addr,
        deadline,
    });
    let path = req.uri().clone();
    let response = next.run(req).await;
    // A refusal answered at once (trailers-only) carries its status in the headers; streams
    // log their own ends (`stream.rs`).
    if let Some(status) = response.headers().get("grpc-status")
        && status.as_bytes() != b"0"
    {
        let message = response.headers().get("grpc-message");
        tracing::debug!(%path, ?addr, ?status, ?message, "grpc call refused");
    }
    response
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_timeout(value: &axum::http::HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.saturating_mul(3600)),
        'M' => Duration::from_secs(n.saturating_mul(60)),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller `admit` decided, or anonymous when it did not run (it always does).
fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller {
            principal: Principal::Anonymous,
            addr: None,
            deadline: None,
        })
}

/// A refused room action: UNAUTHENTICATED without credentials, PERMISSION_DENIED with ones
/// that do not cover it.
fn not_allowed(who: &Principal, room: &str, action: Action) -> Status {
    match who {
        Principal::Anonymous => Status::unauthenticated(format!(
            "{action} in {room} needs a token (metadata authorization: Bearer TOKEN)"
        )),
        _ => Status::permission_denied(format!("your credentials do not allow {action} in {room}")),
    }
}

/// `name` as a room, or INVALID_ARGUMENT saying what is wrong with it.
fn room_name(name: &str) -> Result<&str, Status> {
    crate::protocol::names::check_room(name)
        .map(|()| name)
        .map_err(|e| Status::invalid_argument(format!("room: {e}")))
}

/// An optional cursor (empty: none), or INVALID_ARGUMENT.
fn cursor(text: &str) -> Result<Option<crate::event::MessageId>, Status> {
    crate::event::MessageId::parse_opt(Some(text).filter(|t| !t.is_empty()))
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A room that cannot be opened or joined: its cap, as a status.
fn room_refused(error: crate::hub::RoomError) -> Status {
    Status::resource_exhausted(error.to_string())
}

/// A message that could not be stored.
fn unavailable(error: crate::store::StoreError) -> Status {
    crate::metrics::METRICS.refuse("storage");
    Status::unavailable(format!("message not stored: {error}"))
}

/// The nick metadata (`x-nick`), checked.
fn nick<T>(request: &tonic::Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get("x-nick") else {
        return Ok(None);
    };
    let nick = std::str::from_utf8(value.as_bytes())
        .map_err(|_| Status::invalid_argument("x-nick is not valid UTF-8"))?;
    crate::protocol::names::check_nick(nick)
        .map_err(|e| Status::invalid_argument(format!("x-nick: {e}")))?;
    Ok(Some(nick.to_owned()))
}

/// Fuzzing (`crate::fuzz::grpc_frames`): any bytes as a `ClientFrame` decode or are
/// refused, lower into a request, and encode back to what decodes the same; as the other
/// requests, decode or are refused; as a `grpc-timeout`, parse or are refused.
pub(crate) fn fuzz_frames(data: &[u8]) {
    use prost::Message as _;
    if let Ok(value) = axum::http::HeaderValue::from_bytes(data) {
        let _ = parse_timeout(&value);
    }
    if let Ok(frame) = pb::ClientFrame::decode(data) {
        let _ = stream::lower(&frame);
        let again = pb::ClientFrame::decode(frame.encode_to_vec().as_slice());
        assert_eq!(
            again.as_ref(),
            Ok(&frame),
            "a decoded frame re-encodes to itself"
        );
    }
    let _ = pb::SubscribeRequest::decode(data);
    let _ = pb::PublishRequest::decode(data);
    let _ = pb::HistoryRequest::decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_timeouts() {
        let parse = |s: &'static str| parse_timeout(&axum::http::HeaderValue::from_static(s));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(parse("1x"), None);
        assert_eq!(parse("-1S"), None);
    }

    #[test]
    fn an_encoded_event_passes_through_prost_unchanged() {
        let bytes = Bytes::from_static(&[0x08, 1, 0x1a, 1, b'r']);
        let reply = pb::HistoryReply {
            messages: vec![Encoded(bytes.clone())],
            next: "n".into(),
            ..Default::default()
        };
        let out = prost::Message::encode_to_vec(&reply);
        assert_eq!(&out[..2], &[0x0a, 5]);
        assert_eq!(&out[2..7], &bytes[..]);
    }
}
