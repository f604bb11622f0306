//! Publishing from an MQTT connection: pacing, refusals in the client's version, retained
//! messages, the will, and the ack task that answers in order once messages are durable.

use super::*;

impl Conn {
    pub(super) async fn on_publish(&mut self, p: Publish) -> Result<(), End> {
        if p.qos == 2 && self.received.contains(&p.pkid) {
            // A repeat of a QoS 2 message already taken: answered again, published once.
            self.ack_now(&Outbound::PubRec(p.pkid, Reason::Success))
                .await;
            return Ok(());
        }
        if p.qos == 2 && self.received.len() >= usize::from(RECEIVE_MAXIMUM) {
            return Err(End::Violation(Reason::ReceiveMaximumExceeded));
        }
        let Ok(text) = std::str::from_utf8(&p.payload) else {
            return self
                .refuse(
                    &p,
                    Reason::PayloadFormatInvalid,
                    "payload is not UTF-8 text",
                )
                .await;
        };
        if p.topic.starts_with('$') {
            return self
                .refuse(&p, Reason::TopicNameInvalid, "$ topics are the server's")
                .await;
        }
        self.wait_pace().await?;
        if text.is_empty() {
            // An empty retained message clears the topic's; an empty one is not a message.
            if p.retain
                && self.session.may(&p.topic, Action::Publish)
                && let Err(error) = self.ctx.mqtt.retain(&p.topic, None)
            {
                tracing::warn!(%error, "retained message not cleared");
            }
            return self.accept(&p, None).await;
        }
        match self.session.publish_to(&p.topic, text) {
            Ok(published) => {
                if p.retain {
                    self.keep_retained(&p, text, &published);
                }
                self.accept(&p, Some(published)).await
            }
            Err(refusal) => {
                let reason = refusal_reason(&refusal);
                self.refuse(&p, reason, &refusal.message).await
            }
        }
    }

    /// Waits out the publish limits (MQTT has no "retry later": the client is read no
    /// further until it may publish again); one that keeps pushing is cut as a flood.
    pub(super) async fn wait_pace(&mut self) -> Result<(), End> {
        for _ in 0..4 {
            match self.session.pace() {
                Verdict::Allow => return Ok(()),
                Verdict::Wait(wait) => tokio::time::sleep(wait).await,
                Verdict::Flood => break,
            }
        }
        Err(End::Cut(Disconnect::Flooding))
    }

    /// Keeps a retained message, within `max_rooms` topics in all (a topic outlives its
    /// room, so the room cap alone would not bound them).
    pub(super) fn keep_retained(&self, p: &Publish, text: &str, published: &Published) {
        let mqtt = &self.ctx.mqtt;
        if mqtt.retained_count() >= self.ctx.config.limits.max_rooms && !mqtt.is_retained(&p.topic)
        {
            tracing::warn!(
                topic = p.topic,
                "retained message not kept: too many retained topics"
            );
            return;
        }
        let id = match published {
            Published::New(event, _) => event.id.map(|id| id.to_string()),
            _ => None,
        };
        let retained = Retained {
            text: text.to_owned(),
            qos: p.qos,
            id,
        };
        if let Err(error) = self.ctx.mqtt.retain(&p.topic, Some(&retained)) {
            tracing::warn!(%error, topic = p.topic, "retained message not kept");
        }
    }

    /// Acknowledges a publish: QoS 1 and 2 once the message is durable.
    pub(super) async fn accept(
        &mut self,
        p: &Publish,
        published: Option<Published>,
    ) -> Result<(), End> {
        if p.qos == 2 {
            self.received.insert(p.pkid);
        }
        match (p.qos, published) {
            (0, _) => {}
            (qos, Some(published)) => {
                let _ = self.acks().send(Ack::Durable(published, p.pkid, qos)).await;
            }
            (1, None) => {
                self.ack_now(&Outbound::PubAck(p.pkid, Reason::Success))
                    .await
            }
            (_, None) => {
                self.ack_now(&Outbound::PubRec(p.pkid, Reason::Success))
                    .await
            }
        }
        Ok(())
    }

    /// Refuses a publish: 5.0 says why in its ack (a QoS 0 one is dropped); 3.1.1 has no
    /// way to, so the connection is closed, as its specification allows.
    pub(super) async fn refuse(
        &mut self,
        p: &Publish,
        reason: Reason,
        why: impl std::fmt::Display,
    ) -> Result<(), End> {
        tracing::debug!(client_id = self.client_id, topic = p.topic, %why, "mqtt publish refused");
        if self.version == Version::V4 {
            return Err(End::Violation(reason));
        }
        match p.qos {
            0 => {}
            1 => self.ack_now(&Outbound::PubAck(p.pkid, reason)).await,
            _ => self.ack_now(&Outbound::PubRec(p.pkid, reason)).await,
        }
        Ok(())
    }
}

/// The reason code for a session's refusal.
pub(super) fn refusal_reason(refusal: &Refusal) -> Reason {
    match refusal.code {
        ErrorCode::BadName => Reason::TopicNameInvalid,
        ErrorCode::Forbidden | ErrorCode::Unauthorized => Reason::NotAuthorized,
        ErrorCode::LimitReached | ErrorCode::RateLimited => Reason::QuotaExceeded,
        ErrorCode::Unavailable => Reason::ServerUnavailable,
        _ => Reason::Unspecified,
    }
}

/// Answers publishes in the order they came: each PUBACK or PUBREC once its message is
/// durable, through the connection's own queue (so it is bounded and ordered like the rest).
pub(super) async fn answer_acks(
    mut acks: mpsc::Receiver<Ack>,
    sub: Arc<Subscriber>,
    version: Version,
) {
    while let Some(ack) = acks.recv().await {
        let bytes = match ack {
            Ack::Now(bytes) => bytes,
            Ack::Durable(published, pkid, qos) => {
                let reason = match published.durable().await {
                    Ok(_) => Reason::Success,
                    Err(error) => {
                        tracing::warn!(%error, "mqtt publish not stored; not acknowledged");
                        // 3.1.1 cannot refuse: no ack, so the client sends it again.
                        if version == Version::V4 {
                            continue;
                        }
                        Reason::Unspecified
                    }
                };
                let mut out = BytesMut::new();
                let packet = match qos {
                    1 => Outbound::PubAck(pkid, reason),
                    _ => Outbound::PubRec(pkid, reason),
                };
                codec::encode(version, &packet, &mut out);
                out.freeze()
            }
        };
        sub.offer(Delivery::direct(bytes));
    }
}

impl Conn {
    /// Publishes the will as if the client had. It is charged to the identity's publish
    /// bucket like any publish (not to the connection's, which is ending): a client that
    /// connects and drops over and over publishes wills no faster than messages, and past
    /// the rate its will is dropped and logged.
    pub(super) fn publish_will(&mut self, will: codec::Will) {
        let Ok(text) = String::from_utf8(will.payload.to_vec()) else {
            return;
        };
        if text.is_empty() || will.topic.starts_with('$') {
            return;
        }
        if let Err(wait) = self.session.pace_identity() {
            tracing::info!(
                client_id = self.client_id,
                topic = will.topic,
                retry_in_ms = wait.as_millis() as u64,
                "mqtt will dropped: its sender is over the publish rate"
            );
            return;
        }
        match self.session.publish_to(&will.topic, &text) {
            Ok(published) => {
                tracing::debug!(
                    client_id = self.client_id,
                    topic = will.topic,
                    "mqtt will published"
                );
                if will.retain {
                    let p = Publish {
                        topic: will.topic.clone(),
                        payload: will.payload.clone(),
                        qos: will.qos,
                        retain: true,
                        dup: false,
                        pkid: 0,
                    };
                    self.keep_retained(&p, &text, &published);
                }
            }
            Err(refusal) => {
                tracing::debug!(
                    client_id = self.client_id,
                    message = refusal.message,
                    "mqtt will refused"
                );
            }
        }
    }
}
