//! The Settings a client is answered with on its Telemetry stream: its own, with the
//! server's values merged in (what the 5.x SDKs need to start; see each field).

use super::ProxyConfig;
use super::groups::GroupPolicy;
use super::pb::{self, ClientType, Language};

/// Apache's customized backoff for consumers: 1 s 5 s 10 s 30 s 1 m 2 m … 2 h.
const CUSTOMIZED_BACKOFF_S: &[u64] = &[
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];
/// `policy`: the consumer's group as its brokers hold it (a producer's is unused).
pub fn reply(mut s: pb::Settings, config: &ProxyConfig, policy: GroupPolicy) -> pb::Settings {
    let kind = s.client_type.and_then(|k| ClientType::try_from(k).ok());
    let language = s
        .user_agent
        .as_ref()
        .and_then(|u| Language::try_from(u.language).ok());
    s.metric = Some(pb::Metric {
        on: false,
        endpoints: None,
    });
    match kind {
        Some(ClientType::Producer) => {
            // Node's producer cannot start without an exponential backoff; a body size of 0
            // would fail every send.
            s.backoff_policy = Some(pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: Some(pb::duration_ms(10)),
                        max: Some(pb::duration_ms(1_000)),
                        multiplier: 2.0,
                    },
                )),
            });
            let mut p = match s.pub_sub.take() {
                Some(pb::settings::PubSub::Publishing(p)) => p,
                _ => pb::Publishing::default(),
            };
            p.max_body_size = config.max_body_bytes as i32;
            p.validate_message_type = true;
            s.pub_sub = Some(pb::settings::PubSub::Publishing(p));
        }
        _ => {
            let strategy = if language == Some(Language::NodeJs) {
                // Node reads only exponential backoff, in whole seconds.
                pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                    initial: Some(pb::duration_ms(1_000)),
                    max: Some(pb::duration_ms(60_000)),
                    multiplier: 2.0,
                })
            } else {
                pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                    next: CUSTOMIZED_BACKOFF_S
                        .iter()
                        .map(|s| pb::duration_ms(s * 1000))
                        .collect(),
                })
            };
            s.backoff_policy = Some(pb::RetryPolicy {
                max_attempts: policy.max_attempts,
                strategy: Some(strategy),
            });
            let mut sub = match s.pub_sub.take() {
                Some(pb::settings::PubSub::Subscription(sub)) => sub,
                _ => pb::Subscription::default(),
            };
            sub.fifo = Some(policy.fifo);
            sub.receive_batch_size = Some(32);
            sub.long_polling_timeout = Some(pb::duration_ms(config.max_long_polling_ms));
            s.pub_sub = Some(pb::settings::PubSub::Subscription(sub));
        }
    }
    s
}
