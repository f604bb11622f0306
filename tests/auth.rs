//! Tokens, grants, API keys and names over real sockets on every transport: a server with an
//! HS256 secret, one open room rule and an API key, driven by TCP, UDP, WebSocket, SSE and
//! HTTP clients.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{Line, TIMEOUT, Udp, start_with, test_config};
use switchboard::Config;
use switchboard::auth::{Action, AuthConfig, Grants, Pattern, RoomRule, sign};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const OLD_SECRET: &str = "old-secret-0123456789abcdef-01234567890";
const API_KEY: &str = "backend-key-5f1c";

/// `lobby` and `public.*` are open to anonymous clients for reading and writing; everything
/// else needs a grant.
fn auth_config() -> Config {
    let anyone = [Action::Subscribe, Action::Publish, Action::Presence];
    Config {
        auth: AuthConfig {
            secrets: vec![SECRET.into(), OLD_SECRET.into()],
            api_keys: vec![API_KEY.into()],
            leeway_secs: 0,
            rooms: ["lobby", "public.*"]
                .into_iter()
                .map(|p| RoomRule {
                    pattern: Pattern::new(p),
                    anonymous: anyone.into_iter().collect(),
                    users: None,
                })
                .collect(),
            ..AuthConfig::default()
        },
        ..test_config()
    }
}

fn token(sub: &str, name: Option<&str>, grants: &[&str], ttl: u64) -> String {
    let mut g = Grants::default();
    for grant in grants {
        let (p, a) = Grants::parse_one(grant).unwrap();
        g.push(p, a);
    }
    sign(SECRET, sub, name, &g, ttl).unwrap()
}

use support::http_client as client;

/// The status of a WebSocket handshake refusal, or 101.
async fn ws_status(addr: SocketAddr, query: &str) -> u16 {
    match connect_async(format!("ws://{addr}/ws?{query}")).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("handshake failed oddly: {e}"),
    }
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn publish(
    addr: SocketAddr,
    room: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let req = client()
        .post(format!("http://{addr}/rooms/{room}/messages"))
        .header("content-type", "text/plain");
    let res = build(req).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn tcp_signs_in_with_auth_and_verified_names_show_apart_from_anonymous_ones() {
    let server = start_with(auth_config()).await;
    let (mut anon, _) = Line::connect(server.tcp()).await;
    let (mut alice, _) = Line::connect(server.tcp()).await;
    anon.say("/nick bob").await;
    anon.line_where(|l| l.contains("you are now bob")).await;

    alice.say("/auth not-a-token").await;
    let refused = alice.line_where(|l| l.starts_with("ERR")).await;
    assert!(
        refused.contains("token refused: malformed token"),
        "{refused}"
    );
    let forged = sign(
        "some-other-secret-of-thirty-two-bytes!",
        "alice",
        None,
        &Grants::default(),
        60,
    )
    .unwrap();
    alice.say(&format!("/auth {forged}")).await;
    let refused = alice.line_where(|l| l.starts_with("ERR")).await;
    assert!(refused.contains("bad token signature"), "{refused}");

    alice
        .say(&format!(
            "/auth {}",
            token("u-alice", Some("alice"), &["team=subscribe,publish"], 600)
        ))
        .await;
    let signed = alice.line_where(|l| l.starts_with("* signed in")).await;
    assert!(signed.contains("signed in as alice"), "{signed}");

    alice.say("hello").await;
    assert_eq!(
        anon.line_where(|l| l.contains("hello")).await,
        "alice: hello"
    );
    anon.say("hi").await;
    assert_eq!(alice.line_where(|l| l.contains(": hi")).await, "~bob: hi");

    // The grant opens a room that anonymous clients cannot enter.
    anon.say("/join team").await;
    let refused = anon.line_where(|l| l.starts_with("ERR")).await;
    assert!(
        refused.contains("not allowed to subscribe in team (sign in"),
        "{refused}"
    );
    alice.say("/join team").await;
    alice.line_where(|l| l.contains("you joined team")).await;

    // Anonymous clients cannot take or mimic a verified name.
    anon.say("/nick alice").await;
    let refused = anon.line_where(|l| l.starts_with("ERR")).await;
    assert!(refused.contains("belongs to a verified user"), "{refused}");
    anon.say("/nick \u{430}lice").await;
    assert!(
        anon.line_where(|l| l.starts_with("ERR"))
            .await
            .contains("verified user")
    );
    anon.say("/nick admin").await;
    assert!(
        anon.line_where(|l| l.starts_with("ERR"))
            .await
            .contains("reserved")
    );
    // Nor may a verified user rename.
    alice.say("/nick mallory").await;
    assert!(
        alice
            .line_where(|l| l.starts_with("ERR"))
            .await
            .contains("comes from your token")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_closed_lobby_greets_tcp_and_udp_with_how_to_sign_in() {
    let mut config = auth_config();
    config.auth.rooms.clear();
    let server = start_with(config).await;
    let mut tcp = Line::connect_raw(server.tcp()).await;
    let welcome = tcp.line().await;
    assert!(
        welcome.contains("this server needs a token: /auth TOKEN"),
        "{welcome}"
    );
    tcp.say("hi").await;
    assert!(tcp.line().await.contains("ERR"));
    tcp.say(&format!(
        "/auth {}",
        token("u1", Some("carol"), &["lobby=subscribe,publish"], 600)
    ))
    .await;
    let signed = tcp.line_where(|l| l.starts_with("* signed in")).await;
    assert!(signed.contains("rooms: lobby"), "{signed}");

    let udp = Udp::connect(server.udp()).await;
    udp.send("hello?").await;
    let welcome = udp.recv_where(|l| l.contains("welcome")).await;
    assert!(welcome.contains("needs a token"), "{welcome}");
    udp.send(&format!(
        "/auth {}",
        token("u2", Some("dave"), &["lobby=subscribe,publish"], 600)
    ))
    .await;
    udp.recv_where(|l| l.contains("signed in as dave")).await;
    udp.send("from udp").await;
    assert_eq!(
        tcp.line_where(|l| l.contains("from udp")).await,
        "dave: from udp"
    );
    server.stop().await;
}

#[tokio::test]
async fn websocket_handshakes_answer_each_credential_problem() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let good = token("u1", Some("erin"), &["secret.*=subscribe"], 600);
    let expired = {
        let claims = serde_json::json!({"sub": "u1", "exp": 1_000});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(ws_status(addr, "room=secret.x").await, 401);
    assert_eq!(
        ws_status(addr, &format!("room=secret.x&token={expired}")).await,
        401
    );
    assert_eq!(
        ws_status(addr, "room=secret.x&token=abc.def.ghi").await,
        401
    );
    assert_eq!(
        ws_status(addr, &format!("room=other&token={good}")).await,
        403
    );
    assert_eq!(
        ws_status(addr, &format!("room=secret.x&token={good}")).await,
        101
    );
    // A rotated-out secret that is still configured verifies.
    let old = sign(OLD_SECRET, "u1", None, &Grants::default(), 600).unwrap();
    assert_eq!(ws_status(addr, &format!("token={old}")).await, 101);
    // The header works as well as the query.
    let mut req = format!("ws://{addr}/ws?room=secret.y")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {good}").parse().unwrap());
    assert!(connect_async(req).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn structured_websocket_carries_the_user_refreshes_and_is_closed_at_expiry() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let short = token("u-frank", Some("frank"), &["lobby=subscribe,publish"], 2);
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws?format=json&token={short}"))
        .await
        .unwrap();
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["user"], "u-frank");
    assert_eq!(welcome["nick"], "frank");
    ws.send(Message::text(r#"{"type":"publish","text":"signed"}"#))
        .await
        .unwrap();
    let message = loop {
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(
        (&message["user"], &message["nick"]),
        (&Value::from("u-frank"), &Value::from("frank"))
    );

    // A token for someone else is no refresh.
    let other = token("u-mallory", None, &["lobby=subscribe"], 600);
    ws.send(Message::text(format!(
        r#"{{"type":"auth","token":"{other}","ref":"r1"}}"#
    )))
    .await
    .unwrap();
    let refused = loop {
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(
        (&refused["code"], &refused["ref"]),
        (&Value::from("unauthorized"), &Value::from("r1"))
    );

    // Left alone, the short token expires and the server closes with 4001.
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed at expiry")
    .expect("with a close frame");
    assert_eq!(u16::from(end.code), 4001);
    assert_eq!(end.reason.as_str(), "token expired");

    // The same, refreshed in time, stays open past the first token's expiry.
    let short = token("u-frank", Some("frank"), &["lobby=subscribe,publish"], 2);
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws?format=json&token={short}"))
        .await
        .unwrap();
    let fresh = token("u-frank", Some("frank"), &["lobby=subscribe,publish"], 600);
    ws.send(Message::text(format!(
        r#"{{"type":"auth","token":"{fresh}","ref":"r2"}}"#
    )))
    .await
    .unwrap();
    let answer = loop {
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        if v["type"] == "authenticated" {
            break v;
        }
    };
    assert_eq!(answer["ref"], "r2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws.send(Message::text(
        r#"{"type":"publish","text":"still here","ref":"p"}"#,
    ))
    .await
    .unwrap();
    loop {
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        if v["type"] == "ack" {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn sse_needs_the_grant_and_says_why_it_ends() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let res = client()
        .get(format!("http://{addr}/events?room=vip"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    let t = token("u-gina", None, &["vip=subscribe"], 2);
    let res = client()
        .get(format!("http://{addr}/events?room=vip"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut events = Box::pin(res.bytes_stream().eventsource());
    let end = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(e)) = events.next().await {
            if e.event == "close" {
                return e.data;
            }
        }
        panic!("stream ended without a close event");
    })
    .await
    .expect("ended at expiry");
    assert!(end.contains("token expired"), "{end}");
    server.stop().await;
}

#[tokio::test]
async fn http_publishing_cannot_impersonate_and_api_keys_can_do_everything() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let (mut alice, _) = Line::connect(server.tcp()).await;
    alice
        .say(&format!(
            "/auth {}",
            token("u-alice", Some("alice"), &[], 600)
        ))
        .await;
    alice.line_where(|l| l.starts_with("* signed in")).await;
    let (mut bob, _) = Line::connect(server.tcp()).await;
    bob.say("/nick bob").await;
    bob.line_where(|l| l.contains("you are now bob")).await;

    for nick in [
        "alice",
        "ALICE",
        "\u{430}lice",
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
        "bob",
        "admin",
        "system",
    ] {
        let (status, body, _) = publish(addr, "lobby", |r| {
            r.header("x-nick", nick).body("I am them")
        })
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("nick_taken")),
            "{nick}: {body}"
        );
    }
    let (status, _, _) = publish(addr, "lobby", |r| r.query(&[("nick", "alice")]).body("x")).await;
    assert_eq!(status, 409);
    let res = client()
        .post(format!("http://{addr}/rooms/lobby/messages"))
        .json(&serde_json::json!({"text": "x", "nick": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    // A free anonymous nick posts, marked as anonymous.
    let (status, _, _) =
        publish(addr, "lobby", |r| r.header("x-nick", "carol").body("plain")).await;
    assert_eq!(status, 201);
    assert_eq!(
        alice.line_where(|l| l.contains("plain")).await,
        "~carol: plain"
    );

    // A room no rule opens: 401 with the challenge for anonymous, 403 for a token without it.
    let (status, body, headers) = publish(addr, "ops", |r| r.body("x")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert!(headers.contains_key("www-authenticate"));
    let t = token("u-h", None, &["lobby=publish"], 600);
    let (status, body, _) = publish(addr, "ops", |r| r.bearer_auth(&t).body("x")).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, _, _) = publish(addr, "ops", |r| r.header("x-api-key", "wrong").body("x")).await;
    assert_eq!(status, 401);

    // A token publishes under its own name and no other.
    let (status, _, _) = publish(addr, "lobby", |r| r.bearer_auth(&t).body("verified post")).await;
    assert_eq!(status, 201);
    assert_eq!(
        alice.line_where(|l| l.contains("verified post")).await,
        "u-h: verified post"
    );
    let (status, _, _) = publish(addr, "lobby", |r| {
        r.bearer_auth(&t).header("x-nick", "alice").body("x")
    })
    .await;
    assert_eq!(status, 403);

    // The API key names anyone, in any room, past the per-IP limit (burst 50).
    for i in 0..60 {
        let (status, body, _) = publish(addr, "ops", |r| {
            r.header("x-api-key", API_KEY)
                .header("x-nick", "deploybot")
                .body(format!("n{i}"))
        })
        .await;
        assert_eq!(status, 201, "{i}: {body}");
    }
    for i in 0..60 {
        let (status, _, _) = publish(addr, "public.x", |r| {
            r.header("x-nick", "spam").body(format!("s{i}"))
        })
        .await;
        if status == 429 {
            return server.stop().await;
        }
    }
    panic!("anonymous publishing kept its per-IP limit");
}

#[tokio::test]
async fn reads_follow_the_grants() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let key = |r: reqwest::RequestBuilder| r.header("x-api-key", API_KEY);
    let (status, _, _) = publish(addr, "vault", |r| key(r).body("secret")).await;
    assert_eq!(status, 201);
    let get = |path: &str, token: Option<&str>| {
        let mut req = client().get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/rooms/vault/messages", None).await, 401);
    assert_eq!(get("/rooms/vault/presence", None).await, 401);
    let reader = token("u-r", None, &["vault=history"], 600);
    assert_eq!(get("/rooms/vault/messages", Some(&reader)).await, 200);
    assert_eq!(get("/rooms/vault/presence", Some(&reader)).await, 403);
    let res = client()
        .get(format!("http://{addr}/rooms/vault/messages"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["messages"][0]["text"], "secret");
    assert_eq!(page["messages"][0]["backend"], true);
    // `/rooms` lists only what the caller may see.
    let rooms: Value = client()
        .get(format!("http://{addr}/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!rooms.to_string().contains("vault"), "{rooms}");
    let rooms: Value = client()
        .get(format!("http://{addr}/rooms"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(rooms.to_string().contains("vault"), "{rooms}");
    server.stop().await;
}

#[tokio::test]
async fn an_sse_client_posts_under_its_own_nick_with_the_key_its_stream_gave_it() {
    let server = start_with(test_config()).await;
    let addr = server.http();
    let res = client()
        .get(format!("http://{addr}/events?nick=gina&room=fb"))
        .send()
        .await
        .unwrap();
    let mut events = Box::pin(res.bytes_stream().eventsource());
    let joined = tokio::time::timeout(TIMEOUT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let joined: Value = serde_json::from_str(&joined.data).unwrap();
    let key = joined["nick_key"].as_str().unwrap().to_owned();
    let post = |body: Value| {
        client()
            .post(format!("http://{addr}/rooms/fb/messages"))
            .json(&body)
            .send()
    };
    let stranger = post(serde_json::json!({"text": "x", "nick": "gina"}))
        .await
        .unwrap();
    assert_eq!(stranger.status(), 409);
    let forged = post(serde_json::json!({"text": "x", "nick": "gina", "nick_key": "00"}))
        .await
        .unwrap();
    assert_eq!(forged.status(), 409);
    let own = post(serde_json::json!({"text": "mine", "nick": "gina", "nick_key": key}))
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn browsers_cannot_rebind_or_post_cross_site_and_the_page_is_locked_down() {
    let server = start_with(test_config()).await;
    let addr = server.http();
    // DNS rebinding: the attacker's name in Host, its page as Origin.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    let evil = format!("evil.example:{}", addr.port());
    req.headers_mut().insert("host", evil.parse().unwrap());
    req.headers_mut()
        .insert("origin", format!("http://{evil}").parse().unwrap());
    match connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 421)
        }
        other => panic!("rebinding handshake was not refused: {other:?}"),
    }
    let res = client()
        .get(format!("http://{addr}/rooms"))
        .header("host", &evil)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 421);
    // A cross-site form-style post.
    let (status, body, _) = publish(addr, "lobby", |r| {
        r.header("origin", "https://evil.example").body("csrf")
    })
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    let (status, _, _) = publish(addr, "lobby", |r| {
        r.header("origin", format!("http://{addr}"))
            .body("same origin")
    })
    .await;
    assert_eq!(status, 201);
    let page = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self' 'sha256-"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    server.stop().await;
}

#[tokio::test]
async fn an_api_key_lists_connections_kicks_a_user_everywhere_and_closes_a_room() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let t = token("u-ivan", Some("ivan"), &["*=subscribe,publish"], 600);
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say(&format!("/auth {t}")).await;
    tcp.line_where(|l| l.starts_with("* signed in")).await;
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws?token={t}&room=war-room"))
        .await
        .unwrap();
    let (mut other, _) = Line::connect(server.tcp()).await;
    other.say("/join public.watch").await;
    other
        .line_where(|l| l.contains("you joined public.watch"))
        .await;

    let admin = |path: &str| {
        client()
            .post(format!("http://{addr}{path}"))
            .header("x-api-key", API_KEY)
    };
    let listed: Value = client()
        .get(format!("http://{addr}/admin/connections"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ivans: Vec<&Value> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["user"] == "u-ivan")
        .collect();
    assert_eq!(ivans.len(), 2, "{listed}");
    let anonymous = client()
        .get(format!("http://{addr}/admin/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let user = client()
        .post(format!("http://{addr}/admin/users/ivan/kick"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 403);

    let res = admin("/admin/users/ivan/kick")
        .json(&serde_json::json!({"reason": "spam"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["kicked"], 2, "{body}");
    assert!(
        tcp.line_where(|l| l.starts_with("ERR"))
            .await
            .contains("removed by an operator")
    );
    let code = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(Ok(Message::Close(Some(frame)))) = ws.next().await {
                return u16::from(frame.code);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 4003);
    let res = admin("/admin/users/ivan/kick").send().await.unwrap();
    assert_eq!(res.status(), 404);

    let res = admin("/admin/rooms/public.watch/close")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["disconnected"], 1, "{body}");
    assert!(
        other
            .line_where(|l| l.starts_with("ERR"))
            .await
            .contains("removed by an operator")
    );
    server.stop().await;
}

#[tokio::test]
async fn tcp_refreshes_with_auth_again_and_is_told_at_expiry() {
    let server = start_with(auth_config()).await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say(&format!("/auth {}", token("u-kim", Some("kim"), &[], 2)))
        .await;
    tcp.line_where(|l| l.starts_with("* signed in as kim"))
        .await;
    // A newer token for the same user, before expiry, keeps the connection past the first.
    tcp.say(&format!("/auth {}", token("u-kim", Some("kim"), &[], 600)))
        .await;
    tcp.line_where(|l| l.starts_with("* signed in as kim"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    tcp.say("/who").await;
    assert!(tcp.line().await.starts_with("* in lobby"));
    // A short one, not refreshed: the line says why, then the server closes.
    let (mut short, _) = Line::connect(server.tcp()).await;
    short
        .say(&format!("/auth {}", token("u-lee", Some("lee"), &[], 1)))
        .await;
    short.line_where(|l| l.starts_with("* signed in")).await;
    let bye = short.line_where(|l| l.starts_with("ERR")).await;
    assert_eq!(bye, "ERR disconnected: token expired");
    assert!(short.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn management_bodies_are_optional_json_and_a_bad_one_is_a_json_400() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let close = |body: &'static str| {
        client()
            .post(format!("http://{addr}/admin/rooms/empty-room/close"))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for ok in ["", "null", "{}", r#"{"reason":"maintenance"}"#] {
        let res = close(ok).await.unwrap();
        assert_eq!(res.status(), 200, "{ok:?}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["disconnected"], 0);
    }
    // serde reads a struct from an array too: `[]` and `[null]` once passed as no reason.
    for bad in [
        "[1]",
        "[]",
        "[null]",
        "true",
        "5",
        "\"x\"",
        "{\"reason\":5}",
        "{\"why\":\"x\"}",
        "not json",
    ] {
        let res = close(bad).await.unwrap();
        assert_eq!(res.status(), 400, "{bad:?}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["code"], "bad_request", "{bad:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_stream_needs_the_key_and_sends_live_figures_each_second() {
    let server = start_with(auth_config()).await;
    let addr = server.http();
    let res = client()
        .get(format!("http://{addr}/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let page = client()
        .get(format!("http://{addr}/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self' 'sha256-") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("switchboard · admin"));

    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("hello dashboard").await;
    let res = client()
        .get(format!("http://{addr}/admin/stats"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut events = Box::pin(res.bytes_stream().eventsource());
    let mut next = async || {
        let e = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.event, "stats");
        serde_json::from_str::<Value>(&e.data).unwrap()
    };
    let first = next().await;
    assert!(
        first["connections"]["tcp"].as_i64().unwrap() >= 1,
        "{first}"
    );
    assert!(first["connections_total"].as_u64().unwrap() >= 1);
    assert!(
        first["messages_in_per_sec"].is_null(),
        "no rate before a second sample"
    );
    assert_eq!(first["store"], "memory");
    assert!(first["redis"].is_null());
    for _ in 0..3 {
        tcp.say("more").await;
    }
    let second = next().await;
    assert!(second["messages_in_per_sec"].as_f64().is_some(), "{second}");
    assert!(second["deliveries_per_sec"].as_f64().is_some(), "{second}");
    assert!(second["slow_consumers_total"].as_u64().is_some());
    server.stop().await;
}

/// `--api-key` alone (to open `/admin`) leaves anonymous clients where an open server has them:
/// HTTP posts are taken, a TCP client is in the lobby and talks, direct messages go; the key
/// still opens the admin calls, and a wrong one is still refused.
#[tokio::test]
async fn an_api_key_alone_closes_nothing_to_anonymous_clients() {
    let server = start_with(Config {
        auth: AuthConfig {
            api_keys: vec![API_KEY.into()],
            ..AuthConfig::default()
        },
        ..test_config()
    })
    .await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/nick terminal").await;
    tcp.line_where(|l| l == "* you are now terminal").await;
    let (mut other, _) = Line::connect(server.tcp()).await;
    tcp.say("hello").await;
    other.line_where(|l| l == "terminal: hello").await;
    let res = client()
        .post(format!("http://{}/rooms/lobby/messages", server.http()))
        .body("anonymous post")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    tcp.line_where(|l| l.ends_with(": anonymous post")).await;
    let res = client()
        .post(format!("http://{}/users/terminal/messages", server.http()))
        .body("psst")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    tcp.line_where(|l| l.ends_with("-> you: psst")).await;
    let admin = |key: &str| {
        client()
            .get(format!("http://{}/admin/connections", server.http()))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(admin(API_KEY).await.unwrap().status(), 200);
    assert_eq!(admin("wrong-key").await.unwrap().status(), 401);
    server.stop().await;
}

/// A line client in no room (the lobby is closed to anonymous clients here) is told that, not
/// that it joined several.
#[tokio::test]
async fn a_line_client_in_no_room_is_told_so() {
    let server = start_with(Config {
        auth: AuthConfig {
            secrets: vec![SECRET.into()],
            ..AuthConfig::default()
        },
        ..test_config()
    })
    .await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("hello").await;
    let err = tcp.line_where(|l| l.starts_with("ERR")).await;
    assert!(err.contains("in no room") && err.contains("/join"), "{err}");
    server.stop().await;
}
