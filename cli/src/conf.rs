//! `broker.conf`: RocketMQ's broker properties file (`key=value`, `#` comments), mapped onto
//! rockfish's broker and store configuration. Unknown or malformed keys are errors naming
//! the key; keys RocketMQ has but rockfish does not act on yet are accepted with a warning.

use std::path::PathBuf;

use rockfish_core::broker::{BrokerConfig, BrokerRole, FlushDiskType};
use rockfish_store::StoreConfig;
use rockfish_store::message_store::parse_delay_levels;

#[derive(Debug, Clone)]
pub struct BrokerConf {
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    pub listen_port: u16,
    /// The address the broker binds (Apache 5's `bindAddress`); default 0.0.0.0, all
    /// interfaces, as Apache brokers do.
    pub bind_address: String,
    pub data_dir: PathBuf,
}

/// Keys RocketMQ ships in sample configs that rockfish accepts but does not act on.
const ACCEPTED_UNUSED: &[&str] = &[
    "deleteWhen",
    "fileReservedTime",
    "sendMessageThreadPoolNums",
    "pullMessageThreadPoolNums",
    "storePathConsumeQueue",
    "storePathIndex",
    "storeCheckpoint",
    "abortFile",
    "diskMaxUsedSpaceRatio",
    "brokerIP2",
    "traceTopicEnable",
    "aclEnable",
    "transientStorePoolEnable",
    "useReentrantLockWhenPutMessage",
    "maxTransferCountOnMessageInMemory",
];

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("broker.conf: {key}={v:?} is not a valid number"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("broker.conf: {key}={v:?} is not true or false")),
    }
}

/// Parses the text of a broker.conf.
pub fn parse(text: &str) -> Result<BrokerConf, String> {
    let mut broker = BrokerConfig::default();
    let mut store = StoreConfig::default();
    let mut listen_port = 10911u16;
    let mut ha_port: Option<u16> = None;
    let mut bind_address = "0.0.0.0".to_string();
    let mut ip: Option<String> = None;
    let mut data_dir = default_store_root();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            return Err(format!(
                "broker.conf line {}: expected key=value, got {line:?}",
                n + 1
            ));
        };
        let (key, v) = (key.trim(), value.trim());
        match key {
            "brokerClusterName" => broker.cluster_name = v.to_string(),
            "brokerName" => broker.broker_name = v.to_string(),
            "brokerId" => broker.broker_id = parse_num(key, v)?,
            "namesrvAddr" => {
                broker.namesrv_addrs = v
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "listenPort" => listen_port = parse_num(key, v)?,
            "bindAddress" => {
                bind_address = v
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| format!("broker.conf: bindAddress={v:?}: expected an IP address"))?
                    .to_string()
            }
            "brokerIP1" => ip = Some(v.to_string()),
            "storePathRootDir" => data_dir = PathBuf::from(expand_home(v)),
            "storePathCommitLog" => {
                // rockfish keeps the commit log under the root, as RocketMQ does by default.
                let expected = data_dir.join("commitlog");
                if std::path::Path::new(&expand_home(v)) != expected {
                    return Err(format!(
                        "broker.conf: storePathCommitLog must be <storePathRootDir>/commitlog ({})",
                        expected.display()
                    ));
                }
            }
            "flushDiskType" => {
                broker.flush_disk_type = match v {
                    "ASYNC_FLUSH" => FlushDiskType::Async,
                    "SYNC_FLUSH" => FlushDiskType::Sync,
                    _ => {
                        return Err(format!(
                            "broker.conf: flushDiskType={v:?}: use ASYNC_FLUSH or SYNC_FLUSH"
                        ));
                    }
                }
            }
            "brokerRole" => {
                broker.broker_role = BrokerRole::parse(v).ok_or_else(|| {
                    format!("broker.conf: brokerRole={v:?}: use ASYNC_MASTER, SYNC_MASTER or SLAVE")
                })?
            }
            "haListenPort" => ha_port = Some(parse_num(key, v)?),
            "haMasterAddress" => {
                broker.ha_master_addr = Some(v.to_string()).filter(|v| !v.is_empty())
            }
            "haMaxGapNotInSync" => broker.ha_max_gap_not_in_sync = parse_num(key, v)?,
            "slaveReadEnable" => broker.slave_read_enable = parse_bool(key, v)?,
            "autoCreateTopicEnable" => broker.auto_create_topic = parse_bool(key, v)?,
            "timerWheelEnable" => broker.timer_wheel_enable = parse_bool(key, v)?,
            "timerMaxDelaySec" => {
                broker.timer_max_delay_sec = v
                    .parse()
                    .map_err(|_| format!("broker.conf: {key}={v}: expected seconds"))?
            }
            "timerPrecisionMs" => {
                broker.timer_precision_ms = v
                    .parse()
                    .map_err(|_| format!("broker.conf: {key}={v}: expected milliseconds"))?
            }
            "transactionTimeOut" => broker.transaction_timeout_ms = parse_num(key, v)?,
            "transactionCheckInterval" => broker.transaction_check_interval_ms = parse_num(key, v)?,
            "transactionCheckMax" => broker.transaction_check_max = parse_num(key, v)?,
            "enablePropertyFilter" => broker.enable_property_filter = parse_bool(key, v)?,
            "autoCreateSubscriptionGroup" => {
                broker.auto_create_subscription_group = parse_bool(key, v)?
            }
            "defaultTopicQueueNums" => broker.default_topic_queues = parse_num(key, v)?,
            "mapedFileSizeCommitLog" | "mappedFileSizeCommitLog" => {
                store.commitlog_segment_size = parse_num(key, v)?
            }
            "mapedFileSizeConsumeQueue" | "mappedFileSizeConsumeQueue" => {
                let bytes: u64 = parse_num(key, v)?;
                store.consume_queue_entries = (bytes / 20).max(1);
            }
            "maxMessageSize" => store.max_message_size = parse_num(key, v)?,
            // rockfish's own: files kept mapped at once (default: from vm.max_map_count).
            "maxMappedFiles" => store.max_mapped_files = Some(parse_num(key, v)?),
            "flushIntervalCommitLog" => broker.flush_interval_ms = parse_num(key, v)?,
            "syncFlushTimeout" => broker.sync_flush_timeout_ms = parse_num(key, v)?,
            "waitTimeMillsInSendQueue" => broker.max_wait_in_queue_ms = parse_num(key, v)?,
            "longPollingEnable" => broker.long_polling = parse_bool(key, v)?,
            "registerNameServerPeriod" => broker.register_interval_ms = parse_num(key, v)?,
            "messageDelayLevel" => {
                store.delay_levels_ms = parse_delay_levels(v)
                    .map_err(|e| format!("broker.conf: messageDelayLevel: {e}"))?
            }
            k if ACCEPTED_UNUSED.contains(&k) => {
                eprintln!("broker.conf: {k} is accepted but has no effect in rockfish yet");
            }
            _ => return Err(format!("broker.conf line {}: unknown key {key:?}", n + 1)),
        }
    }
    if store.commitlog_segment_size < 64 * 1024 {
        return Err("broker.conf: mapedFileSizeCommitLog must be at least 65536".into());
    }
    let ip = ip.unwrap_or_else(|| "127.0.0.1".into());
    broker.broker_addr = format!("{ip}:{listen_port}");
    if let Some(p) = ha_port {
        broker.ha_addr = format!("{ip}:{p}");
    }
    broker.validate().map_err(|e| format!("broker.conf: {e}"))?;
    store.validate().map_err(|e| format!("broker.conf: {e}"))?;
    Ok(BrokerConf {
        broker,
        store,
        listen_port,
        bind_address,
        data_dir,
    })
}

fn default_store_root() -> PathBuf {
    PathBuf::from("./rockfish-data")
}

fn expand_home(v: &str) -> String {
    // RocketMQ's sample configs say ${user.home}; honour that and ~.
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    v.replace("${user.home}", &home)
        .replacen('~', &home, usize::from(v.starts_with('~')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rocketmq_sample_config() {
        let conf = parse(
            "# sample\nbrokerClusterName = DefaultCluster\nbrokerName = broker-b\nbrokerId = 0\ndeleteWhen = 04\n\
             fileReservedTime = 48\nbrokerRole = ASYNC_MASTER\nflushDiskType = SYNC_FLUSH\nnamesrvAddr=a:9876;b:9876\n\
             listenPort=10921\nstorePathRootDir=/tmp/rf\nautoCreateTopicEnable=false\nmapedFileSizeCommitLog=1048576\n",
        )
        .unwrap();
        assert_eq!(conf.broker.broker_name, "broker-b");
        assert_eq!(conf.broker.flush_disk_type, FlushDiskType::Sync);
        assert_eq!(conf.broker.namesrv_addrs, vec!["a:9876", "b:9876"]);
        assert_eq!(conf.broker.broker_addr, "127.0.0.1:10921");
        assert!(!conf.broker.auto_create_topic);
        assert_eq!(conf.store.commitlog_segment_size, 1 << 20);
        assert_eq!(conf.data_dir, PathBuf::from("/tmp/rf"));
        assert_eq!(conf.bind_address, "0.0.0.0");
        let conf = parse("bindAddress=127.0.0.1\n").unwrap();
        assert_eq!(conf.bind_address, "127.0.0.1");
    }

    #[test]
    fn names_bad_keys_and_values() {
        let e = parse("brokerNmae=x\n").unwrap_err();
        assert!(e.contains("brokerNmae") && e.contains("unknown"), "{e}");
        let e = parse("brokerId=zero\n").unwrap_err();
        assert!(e.contains("brokerId"), "{e}");
        let e = parse("flushDiskType=SOMETIMES\n").unwrap_err();
        assert!(e.contains("flushDiskType"), "{e}");
        let e = parse("just a line\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse("autoCreateTopicEnable=yes\n").unwrap_err();
        assert!(e.contains("autoCreateTopicEnable"), "{e}");
        let e = parse("bindAddress=everywhere\n").unwrap_err();
        assert!(e.contains("bindAddress"), "{e}");
        let e = parse("flushIntervalCommitLog=0\n").unwrap_err();
        assert!(e.contains("flushIntervalCommitLog"), "{e}");
        let e = parse("mapedFileSizeCommitLog=5368709120\n").unwrap_err();
        assert!(e.contains("mapedFileSizeCommitLog"), "{e}");
    }
}
