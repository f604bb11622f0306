//! `switchboard connect mqtt://[USER:PASSWORD@]HOST:PORT/TOPIC`: subscribes to TOPIC (a
//! filter: `+` and `#` allowed) and prints each message as `topic: payload`; each line typed
//! is published to TOPIC when it names one room. The password is a token, or an API key with
//! the user name `key`. Built on rumqttc's client, as the server is on its packet codec.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{ClientError, input_lines};

/// The parts of an `mqtt://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    login: Option<(String, String)>,
    host: String,
    port: u16,
    topic: String,
}

fn parse(url: &str) -> Result<Target, ClientError> {
    let bad = || ClientError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("mqtt://").ok_or_else(bad)?;
    let (authority, topic) = rest.split_once('/').ok_or_else(bad)?;
    let (login, host_port) = match authority.rsplit_once('@') {
        Some((login, host_port)) => {
            let (user, password) = login.split_once(':').unwrap_or((login, ""));
            (Some((user.to_owned(), password.to_owned())), host_port)
        }
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (host_port, 1883),
    };
    if topic.is_empty() || host.is_empty() {
        return Err(bad());
    }
    Ok(Target {
        login,
        host: host.trim_matches(['[', ']']).to_owned(),
        port,
        topic: topic.to_owned(),
    })
}

/// Runs the MQTT client until `exit`, end of input, or the connection failing.
pub(super) async fn run(url: &str) -> Result<(), ClientError> {
    let target = parse(url)?;
    let mut options = MqttOptions::new(
        format!("switchboard-cli-{}", std::process::id()),
        &target.host,
        target.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = &target.login {
        options.set_credentials(user, password);
    }
    let (client, events) = AsyncClient::new(options, 64);
    client
        .subscribe(&target.topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| ClientError::Mqtt(e.to_string()))?;
    let writable = !target.topic.contains(['+', '#']);
    if std::io::stdin().is_terminal() {
        let typing = if writable {
            format!("lines you type are published to {}; ", target.topic)
        } else {
            String::new()
        };
        eprintln!(
            "subscribed to {}; {typing}type exit or press Ctrl-D to quit",
            target.topic
        );
    }
    let mut lines = input_lines();
    let mut input_open = true;
    let (mut polled, _stop_polling) = poll_apart(events);
    loop {
        tokio::select! {
            Some(event) = polled.recv() => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload);
                    let mut out = std::io::stdout();
                    let _ = writeln!(out, "{}: {}", crate::wire::terminal_safe(&p.topic), crate::wire::terminal_safe(&payload));
                    let _ = out.flush();
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        return Err(ClientError::Mqtt(format!("subscription to {} refused", target.topic)));
                    }
                }
                Ok(_) => {}
                // The goodbye after end of input ends the connection: done.
                Err(_) if !input_open => return Ok(()),
                Err(e) => return Err(ClientError::Mqtt(e.to_string())),
            },
            line = lines.recv(), if input_open => match line {
                Some(line) if writable => {
                    client
                        .publish(&target.topic, QoS::AtLeastOnce, false, line)
                        .await
                        .map_err(|e| ClientError::Mqtt(e.to_string()))?;
                }
                Some(_) => eprintln!("{} is a filter; nothing is published to it", target.topic),
                None => {
                    input_open = false;
                    let _ = client.disconnect().await;
                }
            },
        }
    }
}

/// rumqttc's `poll` is not cancel-safe while it connects: dropped by the other branch of a
/// `select!` mid-handshake, the next call connects again with the same client id, and the
/// server ends the first connection as replaced. So it runs in its own task (stopped when
/// the handle is dropped), and the client waits on a channel, which is cancel-safe.
fn poll_apart(
    mut events: rumqttc::EventLoop,
) -> (
    tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    tokio_util::task::AbortOnDropHandle<()>,
) {
    let (tx, polled) = tokio::sync::mpsc::channel(64);
    let poller = tokio::spawn(async move {
        loop {
            let event = events.poll().await;
            let failed = event.is_err();
            if tx.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    (polled, tokio_util::task::AbortOnDropHandle::new(poller))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_login_host_port_and_topic() {
        assert_eq!(
            parse("mqtt://key:s3cret@example.org:1884/sensors/#").unwrap(),
            Target {
                login: Some(("key".into(), "s3cret".into())),
                host: "example.org".into(),
                port: 1884,
                topic: "sensors/#".into(),
            }
        );
        assert_eq!(parse("mqtt://127.0.0.1/lobby").unwrap().port, 1883);
        assert!(parse("mqtt://127.0.0.1:1883").is_err());
        assert!(parse("mqtt://127.0.0.1:x/a").is_err());
    }
}
