//! The HTTP side of `serve` (axum): the router, the page, health and metrics. Handlers live
//! by resource: `publish` (rooms and users), `history` (pages, long-polls), `presence`,
//! `events` (SSE), `admin`; `upgrade` routes and describes the WebSocket endpoints, whose
//! handshake and connections are a transport (`crate::transport::ws`).

mod activity;
mod admin;
mod error;
mod events;
mod fuzz;
mod guarded;
mod history;
mod openapi;
mod presence;
mod publish;
mod serve;
mod settle;
mod unsent;
mod upgrade;

pub(crate) use fuzz::fuzz_query;
pub(crate) use serve::{Api, serve};

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, Router};

use crate::transport::context::Context;

pub(crate) use error::AppError;

use crate::auth::{self, Action, Principal};

/// `axum::extract::Query`, refusing a bad query (an overflowing number, say) with the JSON
/// error every other 400 has instead of axum's plain text.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub(crate) struct Query<T>(pub(crate) T);

/// `axum::extract::Path`, with the JSON error (a path segment that is not UTF-8, say).
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub(crate) struct Path<T>(pub(crate) T);

/// Who an HTTP client is: an API key, a token (header or `?token=`), or anonymous. A key or
/// token that does not check out is a 401, never a silent downgrade to anonymous.
pub(crate) fn principal(
    shared: &Context,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
) -> Result<Principal, AppError> {
    let (token, api_key) = auth::presented(headers, query_token);
    shared
        .hub
        .auth()
        .principal(token, api_key)
        .map_err(|e| AppError::unauthorized(format!("credentials refused: {e}")))
}

/// `principal`, then a check that it may do `action` in `room`.
pub(crate) fn allowed(
    shared: &Context,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
    room: &str,
    action: Action,
) -> Result<Principal, AppError> {
    let who = principal(shared, headers, query_token)?;
    if shared.hub.auth().allows(&who, room, action) {
        Ok(who)
    } else {
        Err(AppError::not_allowed(&who, room, action))
    }
}

/// The chat page, embedded so the binary needs no files beside it.
const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The page's Content-Security-Policy: its one inline script and style by their hashes and
/// this server's own scripts (`/switchboard.js`), nothing else: no other script can run in
/// it, it cannot be framed, and it talks only to this server.
static PAGE_CSP: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| csp(INDEX_HTML, "<script type=\"module\">"));

/// The dashboard, embedded like the page. It holds no data: every figure it shows comes from
/// API calls that need the key, which the page asks for.
const ADMIN_HTML: &str = include_str!("../../web/admin.html");
static ADMIN_CSP: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| csp(ADMIN_HTML, "<script>"));

/// A Content-Security-Policy admitting `html`'s one inline script (opened by `script_open`)
/// and style by their hashes, and this server's own scripts.
fn csp(html: &str, script_open: &str) -> String {
    let hash = |open: &str, close: &str| -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let body = html
            .split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .map_or("", |(inner, _)| inner);
        let digest = sha2::Sha256::digest(body.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'none'; script-src 'self' {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(script_open, "</script>"),
        hash("<style>", "</style>"),
    )
}

/// The client library (`/switchboard.js`) and its TypeScript declarations, embedded like the page.
const CLIENT_JS: &str = include_str!("../../web/switchboard.js");
const CLIENT_DTS: &str = include_str!("../../web/switchboard.d.ts");

/// `GET /switchboard.js`: an ES module, importable from pages of any origin (it is public
/// code; what it may then do is decided by the server's origin and credential checks).
#[utoipa::path(
    get,
    path = "/switchboard.js",
    tag = "pages",
    summary = "The JavaScript client, an ES module (docs/CLIENT.md)",
    responses((status = 200, description = "The module; its types are at /switchboard.d.ts", content_type = "text/javascript; charset=utf-8", body = String))
)]
async fn client_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::HeaderName::from_static("x-typescript-types"),
                "/switchboard.d.ts",
            ),
        ],
        CLIENT_JS,
    )
}

/// `GET /switchboard.d.ts`: the library's types, for editors and `tsc`.
#[utoipa::path(
    get,
    path = "/switchboard.d.ts",
    tag = "pages",
    summary = "The JavaScript client's TypeScript declarations",
    responses((status = 200, description = "The declarations", content_type = "application/typescript; charset=utf-8", body = String))
)]
async fn client_dts() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/typescript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        CLIENT_DTS,
    )
}

/// `GET /`: the chat page.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    summary = "The chat page",
    responses((status = 200, description = "The page, with a Content-Security-Policy that admits only its own scripts", content_type = "text/html; charset=utf-8", body = String))
)]
async fn index() -> impl IntoResponse {
    page(&PAGE_CSP, INDEX_HTML)
}

/// `GET /admin`: the dashboard.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "pages",
    summary = "The live dashboard",
    description = "The page holds no data: it asks for an API key and then calls /admin/stats, \
                   /admin/connections and the management routes with it.",
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String))
)]
async fn admin_page() -> impl IntoResponse {
    page(&ADMIN_CSP, ADMIN_HTML)
}

fn page(csp: &'static str, html: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Tokens may ride in the page's URL (`#token=` stays local, `?token=` would not).
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
}

/// Browser protections for every route: while listening on loopback, only loopback names
/// (and `allowed_hosts`) in `Host` (421 otherwise, against DNS rebinding); a state-changing
/// request from a page of another origin is refused (403), whatever its content type.
async fn guard(
    State(shared): State<Arc<Context>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let config = &shared.config;
    let loopback = config.http.is_some_and(|a| a.ip().is_loopback());
    // One authority for HTTP/1.1 (`Host`) and HTTP/2 (`:authority`, the URI's).
    let target = match auth::origin::authority(req.uri(), req.headers()) {
        Ok(target) => target,
        Err(host) => {
            tracing::info!(%host, "request with a Host header that is not text");
            return AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the Host header is not text",
            )
            .into_response();
        }
    };
    if loopback && let Err(host) = auth::origin::check_host(&config.allowed_hosts, target) {
        tracing::info!(%host, "request for a host this server does not answer to");
        return AppError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!("this server does not answer to host {host} (see --allowed-host)"),
        )
        .into_response();
    }
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe
        && let Err(origin) =
            auth::origin::check(&config.allowed_origins, loopback, target, req.headers())
    {
        tracing::info!(%origin, method = %req.method(), "cross-site request refused");
        return AppError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {origin} may not send requests here (see --allowed-origin)"),
        )
        .into_response();
    }
    // Failed sign-ins are throttled per client address (`auth::throttle`): past the burst a
    // request that presents credentials is refused unchecked; a 401 to one is charged.
    let presents = presents_credentials(&req);
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .filter(|_| presents);
    let throttle = shared.hub.auth().throttle();
    if let Some(ip) = ip
        && let Err(wait) = throttle.check(ip)
    {
        tracing::info!(%ip, "sign-in throttled");
        return AppError::sign_in_throttled(wait).into_response();
    }
    let response = next.run(req).await;
    if let Some(ip) = ip
        && response.status() == StatusCode::UNAUTHORIZED
    {
        throttle.failed(ip);
    }
    response
}

/// True when a request carries a credential: `Authorization`, `X-API-Key` or `?token=`.
fn presents_credentials(req: &axum::extract::Request) -> bool {
    req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key("x-api-key")
        || req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.strip_prefix("token=").is_some_and(|t| !t.is_empty()))
        })
}

/// Every route, each described by its handler's `#[utoipa::path]` (`openapi`), and the
/// OpenAPI document they make. CONNECT (WebSockets over HTTP/2, RFC 8441) has no OpenAPI
/// method, so it is routed beside its documented GET.
fn api() -> (Router<Arc<Context>>, utoipa::openapi::OpenApi) {
    use axum::routing::connect;
    use upgrade as ws;
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(index))
        .routes(routes!(admin_page))
        .routes(routes!(client_js))
        .routes(routes!(client_dts))
        .routes(routes!(openapi_json))
        .routes(routes!(ws::chat))
        .route("/ws", connect(ws::chat))
        .routes(routes!(ws::mqtt))
        .route("/mqtt", connect(ws::mqtt))
        .routes(routes!(ws::echo))
        .route("/echo", connect(ws::echo))
        .routes(routes!(publish::publish, history::messages))
        .routes(routes!(presence::rooms))
        .routes(routes!(presence::presence))
        .routes(routes!(publish::direct))
        .routes(routes!(events::events))
        .routes(routes!(admin::connections))
        .routes(routes!(admin::stats))
        .routes(routes!(admin::kick))
        .routes(routes!(admin::close_room))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .split_for_parts()
}

/// The document `api` makes, rendered once: every router describes the same routes.
static SPEC: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "pages",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The description of every route", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        SPEC.get().cloned().unwrap_or_default(),
    )
}

/// All HTTP routes.
pub(crate) fn router(shared: Arc<Context>) -> Router {
    let (documented, spec) = api();
    SPEC.get_or_init(|| {
        bytes::Bytes::from(spec.to_pretty_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            serde_json::json!({"error": e.to_string(), "code": "internal"}).to_string()
        }))
    });
    documented
        .fallback(not_found)
        .layer(cors(&shared))
        // A backstop for bodies read by extractors (the admin routes' JSON): publishes time
        // their own body (`publish::read_posted`) to answer 408 with the JSON error.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            shared.config.limits.http_body_timeout + std::time::Duration::from_secs(1),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard,
        ))
        // Outermost: every answer, the guard's refusals included, waits for the body.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            settle::settle,
        ))
        .with_state(shared)
}

/// CORS for pages the Origin policy admits (`allowed_origins`, the host itself, loopback
/// pages; `auth::origin::check`): they may read the API's answers and send the headers it
/// takes, so an app on its own origin can use `/switchboard.js` there. Credentials are
/// headers, never cookies, so nothing ambient is shared; a page the policy refuses gets no
/// CORS headers (and `guard` refuses its POSTs). Inside `guard`, so the Host check comes first.
fn cors(shared: &Context) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = shared.config.allowed_origins.clone();
    let loopback = shared.config.http.is_some_and(|a| a.ip().is_loopback());
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |_, request| {
            auth::origin::authority(&request.uri, &request.headers).is_ok_and(|target| {
                auth::origin::check(&allowed, loopback, target, &request.headers).is_ok()
            })
        }))
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-nick"),
            HeaderName::from_static("x-nick-key"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-typescript-types"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Health: `200 ok` while the server accepts work, with what it is holding. In a cluster,
/// `503 degraded` while this node cannot receive the Redis bus (it still serves its clients,
/// but cannot publish or hear other nodes), so a load balancer can steer new clients away.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    summary = "Health",
    responses(
        (status = 200, description = "Accepting work", body = openapi::Health),
        (status = 503, description = "A cluster node that cannot hear Redis, or whose writes Redis refuses", body = openapi::Health),
    )
)]
async fn healthz(State(shared): State<Arc<Context>>) -> impl IntoResponse {
    let redis = shared.hub.broker().map(|b| b.is_up());
    // Hearing the bus is not enough: a Redis that refuses every write (full, or a cluster
    // answering CROSSSLOT) leaves every publish failing.
    let reason = match shared.hub.broker() {
        Some(b) if !b.is_up() => Some("not connected to Redis".to_owned()),
        Some(b) => b.refusing_writes(),
        None => None,
    };
    let status = match reason {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    let body = openapi::Health {
        status: if status == StatusCode::OK {
            "ok"
        } else {
            "degraded"
        }
        .to_owned(),
        connections: shared.limiter.open(),
        // A count, not a list: a health probe costs the same at 100,000 rooms as at one.
        rooms: shared.hub.room_count(),
        redis: redis.map(|up| if up { "up" } else { "down" }.to_owned()),
        reason,
        node: shared.hub.broker().map(|b| b.node().to_owned()),
    };
    (status, Json(body))
}

/// Prometheus exposition of `crate::metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    )
)]
async fn metrics(State(shared): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::METRICS.render(shared.hub.stats()),
    )
}

async fn not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/PROTOCOL.md)",
    )
}
