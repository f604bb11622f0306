//! One endpoint's sender: POSTs the oldest queued events in a signed batch, forgets them once
//! answered 2xx, and otherwise retries the same batch after an exponential, jittered pause.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::WebhookConfig;
use super::queue::Queue;
use crate::metrics::METRICS;

/// The first pause after a failure; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The HTTP client every sender shares (its connection pool keeps receivers' connections).
pub(super) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!(
            "switchboard/",
            env!("CARGO_PKG_VERSION"),
            " webhooks"
        ))
        // A receiver answers; it does not send the server elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The body of one POST: when it was signed, and the events, oldest first. The timestamp is
/// inside the signed body, so a receiver that refuses old timestamps refuses replays.
fn body(timestamp: u64, events: &[(i64, String)]) -> String {
    let mut body = format!("{{\"timestamp\":{timestamp},\"events\":[");
    for (k, (_, event)) in events.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
    body
}

/// POSTs one signed batch; `None` when the receiver took it (answered 2xx), else why not.
async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    secret: &[u8],
    batch: &[(i64, String)],
    timeout: Duration,
) -> Option<String> {
    let timestamp = crate::event::now_ms() / 1000;
    let body = body(timestamp, batch);
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-switchboard-timestamp", timestamp.to_string())
        .header(
            "x-switchboard-signature",
            signature(secret, body.as_bytes()),
        )
        .body(body)
        .send()
        .await;
    match sent {
        Ok(res) if res.status().is_success() => None,
        Ok(res) => Some(format!("answered {}", res.status())),
        Err(e) if e.is_timeout() => Some(format!("no answer within {timeout:?}")),
        Err(e) => Some(format!("unreachable: {e}")),
    }
}

/// The oldest `max` events queued for endpoint `index` (none if the queue cannot be read);
/// `None` when the runtime is going away.
async fn peek(
    queue: &Arc<Queue>,
    index: usize,
    max: usize,
    url: &reqwest::Url,
) -> Option<Vec<(i64, String)>> {
    let q = Arc::clone(queue);
    match tokio::task::spawn_blocking(move || q.peek(index, max)).await {
        Ok(Ok(batch)) => Some(batch),
        Ok(Err(e)) => {
            tracing::warn!(%url, error = %e, "webhook queue unreadable");
            Some(Vec::new())
        }
        Err(_) => None,
    }
}

/// Sends endpoint `index`'s queue until `shutdown`.
pub(super) async fn run(
    index: usize,
    config: Arc<WebhookConfig>,
    queue: Arc<Queue>,
    wakers: Arc<[Notify]>,
    client: reqwest::Client,
    shutdown: CancellationToken,
) {
    let url = config.endpoints[index].url.clone();
    let secret = config.endpoints[index].secret.clone();
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let Some(batch) = peek(&queue, index, config.batch_max, &url).await else {
            return;
        };
        let Some(&(last, _)) = batch.last() else {
            // Nothing queued: wait for the dispatcher (or a slow tick, in case of a race).
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wakers[index].notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        queue.sending(index, last);
        let failure = tokio::select! {
            _ = shutdown.cancelled() => return,
            failure = post(&client, &url, secret.as_bytes(), &batch, config.timeout) => failure,
        };
        match failure {
            None => {
                queue.sending(index, 0);
                let q = Arc::clone(&queue);
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || q.remove_through(index, last)).await
                {
                    tracing::warn!(%url, error = %e, "delivered webhook events not forgotten");
                }
                METRICS.webhook_sent.inc_by(batch.len() as u64);
                METRICS.webhook_queued.set(queue.total() as i64);
                if failing {
                    tracing::info!(%url, "webhook receiver is answering again");
                }
                failing = false;
                backoff = FIRST_BACKOFF;
            }
            Some(why) => {
                METRICS.webhook_failed.inc();
                let q = Arc::clone(&queue);
                let sent_batch = batch.clone();
                if let Ok(Ok(lost)) =
                    tokio::task::spawn_blocking(move || q.lost_from(index, &sent_batch)).await
                {
                    METRICS.webhook_dropped.inc_by(lost);
                }
                // Said once per outage, then at debug, so that a receiver down for a day
                // does not fill the log.
                if failing {
                    tracing::debug!(%url, %why, retry_in = ?backoff, "webhook POST failed");
                } else {
                    tracing::warn!(%url, %why, queued = batch.len(), "webhook POST failed; retrying with backoff");
                }
                failing = true;
                let jitter = 0.5 + (crate::event::now_ms() % 1000) as f64 / 1000.0;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
