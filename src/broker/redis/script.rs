//! The `STORE` Lua script, which numbers, stores, trims and publishes a message atomically,
//! and how its calls are built and its answers read.

use redis::Value;

use super::RedisCluster;
use crate::broker::Stored;
use crate::event::{MessageId, now_ms};
use crate::store::StoreError;

/// The atomic store-and-publish. See the module comment; arguments are listed at the top.
pub(super) const STORE: &str = r#"
-- KEYS: 1 meta, 2 log, 3 idempotency key
-- ARGV: 1 epoch if the room is new, 2 seq ('' = take the next), 3 nick, 4 text, 5 time ms,
--       6 origin, 7 max messages, 8 max age ms, 9 '1' if KEYS[3] is used, 10 bus channel
--       ('' = none), 11 room, 12 last seq known to the caller, 13 now ms, 14 bus JSON
--       without the id, 15 sender as `Sender::to_stored` writes it ('' = open)
local meta, log, key = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- A new room, one that expired, or one whose counter was lost: carry on from what the
  -- caller has seen.
  epoch = ARGV[1]
  redis.call('HSET', meta, 'epoch', epoch, 'seq', ARGV[12])
end
if ARGV[9] == '1' then
  local prior = redis.call('GET', key)
  if prior then return {0, prior} end
end
local seq
if ARGV[2] == '' then
  seq = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('XADD', log, 'MAXLEN', ARGV[7], '0-' .. seq,
    'n', ARGV[3], 't', ARGV[4], 'ms', ARGV[5], 'o', ARGV[6], 'u', ARGV[15])
else
  seq = tonumber(ARGV[2])
  redis.call('XADD', log, 'MAXLEN', ARGV[7], '0-' .. seq,
    'n', ARGV[3], 't', ARGV[4], 'ms', ARGV[5], 'o', ARGV[6], 'u', ARGV[15])
  if seq > tonumber(redis.call('HGET', meta, 'seq') or '0') then
    redis.call('HSET', meta, 'seq', seq)
  end
end
-- Age: drop expired entries from the front, a bounded number per call. Looking at the
-- oldest entry alone is the common case (it has not expired); measured, a 16-entry scan on
-- every call was a quarter of the script's cost.
local cutoff = tonumber(ARGV[13]) - tonumber(ARGV[8])
local function expired(entry)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'ms' then return tonumber(f[i + 1]) < cutoff end
  end
  return false
end
local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
if oldest and expired(oldest) then
  local last_old = nil
  for _, entry in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', 64)) do
    if not expired(entry) then break end
    last_old = entry[1]
  end
  redis.call('XTRIM', log, 'MINID', '0-' .. (tonumber(string.sub(last_old, 3)) + 1))
end
-- A room nobody writes to disappears once all it holds has expired.
redis.call('PEXPIRE', log, ARGV[8])
redis.call('PEXPIRE', meta, ARGV[8])
if ARGV[9] == '1' then
  redis.call('SET', key, epoch .. ':' .. seq, 'PX', ARGV[8])
end
if ARGV[10] ~= '' then
  -- ARGV[14] is the message's JSON without its id, encoded by the node (cheaper than cjson
  -- here): it ends just before the closing brace.
  redis.call('PUBLISH', ARGV[10], ARGV[14] .. ',"e":"' .. epoch .. '","s":"' .. seq .. '"}')
end
return {1, epoch, seq}
"#;

/// The arguments of one `STORE` call.
pub(super) struct StoreArgs<'a> {
    pub(super) epoch: u32,
    pub(super) seq: Option<u64>,
    pub(super) nick: &'a str,
    /// `Sender::to_stored`'s form, `""` for an open server's name.
    pub(super) sender: &'a str,
    pub(super) text: &'a str,
    pub(super) time_ms: u64,
    pub(super) origin: &'a str,
    pub(super) key: Option<&'a str>,
    pub(super) bus: bool,
    pub(super) known_seq: u64,
}

pub(super) fn parse_stored(value: Value) -> Result<Stored, StoreError> {
    let bad = || StoreError::Failed("unexpected answer from Redis".into());
    let Value::Array(items) = value else {
        return Err(bad());
    };
    let int = |v: &Value| -> Option<u64> {
        match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::SimpleString(s) => s.parse().ok(),
            _ => None,
        }
    };
    match items.as_slice() {
        [flag, epoch, seq] if int(flag) == Some(1) => Ok(Stored {
            id: MessageId {
                epoch: int(epoch)
                    .and_then(|e| u32::try_from(e).ok())
                    .ok_or_else(bad)?,
                seq: int(seq).ok_or_else(bad)?,
            },
            duplicate: false,
        }),
        [flag, Value::BulkString(prior)] if int(flag) == Some(0) => {
            let prior = std::str::from_utf8(prior).map_err(|_| bad())?;
            let (epoch, seq) = prior.split_once(':').ok_or_else(bad)?;
            Ok(Stored {
                id: MessageId {
                    epoch: epoch.parse().map_err(|_| bad())?,
                    seq: seq.parse().map_err(|_| bad())?,
                },
                duplicate: true,
            })
        }
        _ => Err(bad()),
    }
}

impl RedisCluster {
    pub(super) fn store_cmd(&self, room: &str, args: StoreArgs<'_>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.script_sha)
            .arg(3)
            .arg(self.key("meta", room))
            .arg(self.key("log", room))
            .arg(self.idempotency_key(room, args.key.unwrap_or("")))
            .arg(args.epoch)
            .arg(args.seq.map(|s| s.to_string()).unwrap_or_default())
            .arg(args.nick)
            .arg(args.text)
            .arg(args.time_ms)
            .arg(args.origin)
            .arg(self.retention.max_messages.max(1))
            .arg(self.retention.max_age.as_millis() as u64)
            .arg(if args.key.is_some() { "1" } else { "0" })
            .arg(if args.bus { self.bus.as_str() } else { "" })
            .arg(room)
            .arg(args.known_seq)
            .arg(now_ms());
        if args.bus {
            let json = serde_json::json!({
                "k": "m", "r": room, "n": args.nick, "u": args.sender, "t": args.text,
                "ms": args.time_ms.to_string(), "o": args.origin,
            })
            .to_string();
            // Drop the closing brace; the script appends the id fields and closes it.
            cmd.arg(&json[..json.len() - 1]);
        } else {
            cmd.arg("");
        }
        cmd.arg(args.sender);
        cmd
    }
}
