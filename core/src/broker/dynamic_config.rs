//! GET_BROKER_CONFIG and UPDATE_BROKER_CONFIG: the broker's settings under Apache's key
//! names, as `key=value` lines (Java's `MixAll.properties2String`), and the keys that may
//! change while it runs. An update applies at once, is checked as a start's config is, and
//! is persisted (`config/broker.dynamic.properties`), so a restart keeps it: those keys
//! override broker.conf's at start (logged).

use std::collections::BTreeMap;

use rockfish_store::Disk;

use super::{Broker, BrokerConfig};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::response;

/// Where updated keys are kept, under the store's root.
pub const DYNAMIC_CONFIG_FILE: &str = "config/broker.dynamic.properties";

/// The keys UPDATE_BROKER_CONFIG accepts: each is read where it is used, so a change takes
/// effect on the next request, timer or registration. Every other key needs a restart.
pub const DYNAMIC_KEYS: &[&str] = &[
    "brokerPermission",
    "autoCreateTopicEnable",
    "autoCreateSubscriptionGroup",
    "defaultTopicQueueNums",
    "longPollingEnable",
    "waitTimeMillsInSendQueue",
    "syncFlushTimeout",
    "flushIntervalCommitLog",
    "registerNameServerPeriod",
    "transactionTimeOut",
    "transactionCheckInterval",
    "transactionCheckMax",
    "slaveReadEnable",
    "haMaxGapNotInSync",
    "enablePropertyFilter",
    "maxMessageSize",
];

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(format!("{key}={v:?}: expected true or false")),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{key}={v:?}: expected a number"))
}

/// Sets one dynamic key on `config` (and the store's `max_message_size`).
fn set_key(
    config: &mut BrokerConfig,
    max_message_size: &mut usize,
    key: &str,
    v: &str,
) -> Result<(), String> {
    match key {
        "brokerPermission" => {
            let p: u32 = parse_num(key, v)?;
            if p & !0b1110 != 0 {
                return Err(format!(
                    "brokerPermission={v}: expected 2 (write), 4 (read) or 6 (read and write)"
                ));
            }
            config.broker_permission = p;
        }
        "autoCreateTopicEnable" => config.auto_create_topic = parse_bool(key, v)?,
        "autoCreateSubscriptionGroup" => {
            config.auto_create_subscription_group = parse_bool(key, v)?
        }
        "defaultTopicQueueNums" => config.default_topic_queues = parse_num(key, v)?,
        "longPollingEnable" => config.long_polling = parse_bool(key, v)?,
        "waitTimeMillsInSendQueue" => config.max_wait_in_queue_ms = parse_num(key, v)?,
        "syncFlushTimeout" => config.sync_flush_timeout_ms = parse_num(key, v)?,
        "flushIntervalCommitLog" => config.flush_interval_ms = parse_num(key, v)?,
        "registerNameServerPeriod" => config.register_interval_ms = parse_num(key, v)?,
        "transactionTimeOut" => config.transaction_timeout_ms = parse_num(key, v)?,
        "transactionCheckInterval" => config.transaction_check_interval_ms = parse_num(key, v)?,
        "transactionCheckMax" => config.transaction_check_max = parse_num(key, v)?,
        "slaveReadEnable" => config.slave_read_enable = parse_bool(key, v)?,
        "haMaxGapNotInSync" => config.ha_max_gap_not_in_sync = parse_num(key, v)?,
        "enablePropertyFilter" => config.enable_property_filter = parse_bool(key, v)?,
        "maxMessageSize" => {
            let n: usize = parse_num(key, v)?;
            if !(1..=i32::MAX as usize).contains(&n) {
                return Err(format!("maxMessageSize={n}: must be 1..={}", i32::MAX));
            }
            *max_message_size = n;
        }
        _ => {
            return Err(format!(
                "{key} cannot change while the broker runs (set it in broker.conf and restart); \
                 these can: {}",
                DYNAMIC_KEYS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Applies `updates` to a copy of the settings; all or none (each checked, then the whole
/// config validated as at a start).
pub fn apply(
    config: &BrokerConfig,
    max_message_size: usize,
    updates: &BTreeMap<String, String>,
) -> Result<(BrokerConfig, usize), String> {
    let mut c = config.clone();
    let mut m = max_message_size;
    for (k, v) in updates {
        set_key(&mut c, &mut m, k, v)?;
    }
    c.validate()?;
    Ok((c, m))
}

/// Java properties text: `key=value` lines (comments and blank lines skipped).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=').or_else(|| l.split_once(':'))?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn properties_text(props: &BTreeMap<String, String>) -> String {
    props.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

impl<D: Disk> Broker<D> {
    /// Every setting under its broker.conf name.
    pub fn config_properties(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        let s = self.store.config();
        let mut p = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            p.insert(k.to_string(), v);
        };
        put("brokerClusterName", c.cluster_name.clone());
        put("brokerName", c.broker_name.clone());
        put("brokerId", c.broker_id.to_string());
        put("namesrvAddr", c.namesrv_addrs.join(";"));
        let (ip, port) = c
            .broker_addr
            .rsplit_once(':')
            .unwrap_or((&c.broker_addr, ""));
        put("brokerIP1", ip.to_string());
        put("listenPort", port.to_string());
        put("brokerRole", self.repl.role.name().to_string());
        put(
            "flushDiskType",
            match c.flush_disk_type {
                super::FlushDiskType::Async => "ASYNC_FLUSH",
                super::FlushDiskType::Sync => "SYNC_FLUSH",
            }
            .to_string(),
        );
        put("brokerPermission", c.broker_permission.to_string());
        put("autoCreateTopicEnable", c.auto_create_topic.to_string());
        put(
            "autoCreateSubscriptionGroup",
            c.auto_create_subscription_group.to_string(),
        );
        put("defaultTopicQueueNums", c.default_topic_queues.to_string());
        put("longPollingEnable", c.long_polling.to_string());
        put(
            "waitTimeMillsInSendQueue",
            c.max_wait_in_queue_ms.to_string(),
        );
        put("syncFlushTimeout", c.sync_flush_timeout_ms.to_string());
        put("flushIntervalCommitLog", c.flush_interval_ms.to_string());
        put(
            "registerNameServerPeriod",
            c.register_interval_ms.to_string(),
        );
        put("transactionTimeOut", c.transaction_timeout_ms.to_string());
        put(
            "transactionCheckInterval",
            c.transaction_check_interval_ms.to_string(),
        );
        put("transactionCheckMax", c.transaction_check_max.to_string());
        put("slaveReadEnable", c.slave_read_enable.to_string());
        put("haMaxGapNotInSync", c.ha_max_gap_not_in_sync.to_string());
        put("haListenPort", {
            let ha = c.effective_ha_addr();
            ha.rsplit_once(':')
                .map_or(String::new(), |(_, p)| p.to_string())
        });
        put("enablePropertyFilter", c.enable_property_filter.to_string());
        put("enableControllerMode", c.enable_controller_mode.to_string());
        put("controllerAddr", c.controller_addrs.join(";"));
        put("timerWheelEnable", c.timer_wheel_enable.to_string());
        put("timerMaxDelaySec", c.timer_max_delay_sec.to_string());
        put("timerPrecisionMs", c.timer_precision_ms.to_string());
        put("maxMessageSize", s.max_message_size.to_string());
        put(
            "mappedFileSizeCommitLog",
            s.commitlog_segment_size.to_string(),
        );
        put(
            "mappedFileSizeConsumeQueue",
            (s.consume_queue_entries * 20).to_string(),
        );
        put(
            "messageDelayLevel",
            s.delay_levels_ms
                .iter()
                .map(|ms| match ms {
                    ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
                    ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
                    ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
                    ms => format!("{ms}ms"),
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
        p
    }

    /// GET_BROKER_CONFIG: the settings as properties text (the version field Apache adds is
    /// the topics' data version, which clients only print).
    pub(super) fn get_broker_config(&mut self, cmd: &RemotingCommand) -> RemotingCommand {
        let version = serde_json::to_string(&self.topics.table().data_version).unwrap_or_default();
        Self::body_response(
            cmd,
            bytes::Bytes::from(properties_text(&self.config_properties())),
        )
        .with_ext("version", version)
    }

    /// UPDATE_BROKER_CONFIG: properties text in the body; only dynamic keys.
    pub(super) fn update_broker_config(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> RemotingCommand {
        let Ok(text) = std::str::from_utf8(&cmd.body) else {
            return RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some("the body is not UTF-8 properties text".into()),
            );
        };
        let updates = parse_properties(text);
        if updates.is_empty() {
            return RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some("string2Properties error: no key=value in the body".into()),
            );
        }
        match self.apply_dynamic(&updates, now) {
            Ok(()) => {
                self.dynamic.extend(updates);
                self.write_dynamic_config();
                RemotingCommand::response_to(cmd, response::SUCCESS, None)
            }
            Err(why) => RemotingCommand::response_to(cmd, response::SYSTEM_ERROR, Some(why)),
        }
    }

    /// Applies updates to the running broker (all or none).
    pub(super) fn apply_dynamic(
        &mut self,
        updates: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<(), String> {
        let (config, max_message_size) =
            apply(&self.config, self.store.config().max_message_size, updates)?;
        let perm_changed = config.broker_permission != self.config.broker_permission;
        let register_changed = config.register_interval_ms != self.config.register_interval_ms;
        tracing::info!(?updates, "broker config updated");
        self.config = config;
        self.store.set_max_message_size(max_message_size);
        if perm_changed || register_changed {
            // Routes change with the permission: re-register at once.
            self.topics.bump_version(now);
            self.register_all(now);
        }
        Ok(())
    }

    pub(super) fn write_dynamic_config(&mut self) {
        let text = properties_text(&self.dynamic);
        self.persist(
            super::persist::PersistKind::DynamicConfig,
            DYNAMIC_CONFIG_FILE,
            text.into_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_dynamic_keys_all_or_none() {
        let c = BrokerConfig::default();
        let ok: BTreeMap<String, String> = [("brokerPermission", "4"), ("maxMessageSize", "1024")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (c2, m) = apply(&c, 4 << 20, &ok).unwrap();
        assert_eq!((c2.broker_permission, m), (4, 1024));
        let bad: BTreeMap<String, String> = [("brokerPermission", "4"), ("brokerName", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = apply(&c, 4 << 20, &bad).unwrap_err();
        assert!(e.contains("brokerName cannot change"), "{e}");
        let invalid: BTreeMap<String, String> = [("defaultTopicQueueNums", "0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(apply(&c, 4 << 20, &invalid).is_err());
        assert_eq!(
            parse_properties("# c\na=1\n b = 2 \n\nc:3\n"),
            [("a", "1"), ("b", "2"), ("c", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
    }
}
