//! Presence across nodes: a hash of members per room, whose entries count only while their
//! node's heartbeat key lives, and presence changes on the bus.

use std::collections::HashSet;

use super::{RedisCluster, TIMEOUT, unavailable};
use crate::broker::MemberInfo;
use crate::event::{Disconnect, Event, EventKind, Transport};
use crate::store::StoreError;

impl RedisCluster {
    /// Tells the other nodes about a join, leave or nick change of a local member, and keeps
    /// the room's member hash current. Presence is best effort: if Redis is behind or away
    /// the change is logged and dropped.
    pub(super) fn share_presence(&self, event: &Event, transport: Transport, sub: u64) {
        let member = format!("{}/{sub}", self.node);
        let who = self.key("who", &event.room);
        let (kind, old, why) = match &event.kind {
            EventKind::Join => ("j", None, None),
            EventKind::Leave { reason } => ("l", None, *reason),
            EventKind::Nick { old } => ("n", Some(&**old), None),
            EventKind::Message | EventKind::Direct { .. } | EventKind::Crowd { .. } => return,
        };
        let mut hash = redis::cmd(if kind == "l" { "HDEL" } else { "HSET" });
        hash.arg(&who).arg(&member);
        if kind != "l" {
            hash.arg(format!("{} {}", transport.as_str(), event.nick));
        }
        let payload = serde_json::json!({
            "k": kind, "r": &*event.room, "n": &*event.nick, "o": member,
            "old": old, "why": why.map(Disconnect::as_str),
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.bus).arg(payload.to_string());
        for cmd in [hash, publish] {
            if self.enqueue(cmd, None).is_err() {
                tracing::warn!(room = %event.room, "redis queue full; presence change not shared");
                return;
            }
        }
    }

    /// Members of `room` on other live nodes.
    pub(super) async fn remote_members(&self, room: &str) -> Result<Vec<MemberInfo>, StoreError> {
        let mut conn = self.query_conn().await?;
        let entries: Vec<(String, String)> = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("HGETALL")
                .arg(self.key("who", room))
                .query_async(&mut conn),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let nodes: Vec<&str> = entries
            .iter()
            .filter_map(|(member, _)| member.split_once('/').map(|(node, _)| node))
            .filter(|node| *node != self.node)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut exists = redis::pipe();
        for node in &nodes {
            exists.cmd("EXISTS").arg(self.node_key(node));
        }
        let alive: Vec<bool> = tokio::time::timeout(TIMEOUT, exists.query_async(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let alive: HashSet<&str> = nodes
            .iter()
            .zip(alive)
            .filter_map(|(node, up)| up.then_some(*node))
            .collect();
        // Entries of nodes that died without saying goodbye are removed when seen.
        let dead: Vec<&str> = entries
            .iter()
            .map(|(member, _)| member.as_str())
            .filter(|member| {
                member
                    .split_once('/')
                    .is_some_and(|(node, _)| node != self.node && !alive.contains(node))
            })
            .collect();
        if !dead.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.key("who", room)).arg(&dead);
            let _ = self.enqueue(cmd, None);
        }
        Ok(entries
            .iter()
            .filter(|(member, _)| {
                member
                    .split_once('/')
                    .is_some_and(|(node, _)| alive.contains(node))
            })
            .filter_map(|(_, value)| {
                let (transport, nick) = value.split_once(' ')?;
                Some(MemberInfo {
                    nick: nick.into(),
                    transport: Transport::parse(transport)?,
                })
            })
            .collect())
    }
}
