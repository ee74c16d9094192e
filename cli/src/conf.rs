//! `broker.conf`: RocketMQ's broker properties file (`key=value`, `#` comments), mapped onto
//! rockfish's broker and store configuration. Unknown or malformed keys are errors naming
//! the key; keys RocketMQ has but rockfish does not act on yet are accepted with a warning.

use std::path::PathBuf;

use rockfish_core::broker::{BrokerConfig, BrokerRole, FlushDiskType};
use rockfish_core::controller::ControllerConfig;
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
    /// The HTTP port (metrics, console), when metricsExporterType=PROM: "host:port".
    pub http_listen: Option<String>,
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
    let (mut prom, mut prom_port, mut prom_host) = (false, 5557u16, None::<String>);
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
            // RocketMQ 5's keys: PROM (or 2) serves /metrics (and the console) on the port.
            "metricsExporterType" => {
                prom = match v.to_ascii_uppercase().as_str() {
                    "PROM" | "2" => true,
                    "DISABLE" | "0" => false,
                    other => {
                        return Err(format!(
                            "broker.conf: metricsExporterType={other}: rockfish exports PROM or DISABLE"
                        ));
                    }
                }
            }
            "metricsPromExporterPort" => prom_port = parse_num(key, v)?,
            "metricsPromExporterHost" => prom_host = Some(v.to_string()).filter(|h| !h.is_empty()),
            "brokerName" => broker.broker_name = v.to_string(),
            "brokerId" => broker.broker_id = parse_num(key, v)?,
            "namesrvAddr" => broker.namesrv_addrs = split_addrs(v),
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
            "enableControllerMode" => broker.enable_controller_mode = parse_bool(key, v)?,
            "controllerAddr" => broker.controller_addrs = split_addrs(v),
            "controllerHeartBeatInterval" | "brokerHeartbeatInterval" => {
                broker.controller_heartbeat_ms = parse_num(key, v)?
            }
            "haMaxTimeSlaveNotCatchup" => {
                broker.ha_max_time_slave_not_catchup_ms = parse_num(key, v)?
            }
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
            // Default: on exactly under SYNC_FLUSH (see StoreConfig::warm_mapped_file).
            "warmMapedFileEnable" | "warmMappedFileEnable" => {
                store.warm_mapped_file = Some(parse_bool(key, v)?)
            }
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
    // An empty host listens on brokerIP1, as Apache's broker does.
    let http_listen = prom.then(|| {
        let host = prom_host
            .clone()
            .or(ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("{host}:{prom_port}")
    });
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
        http_listen,
    })
}

/// `a:1;b:2` (RocketMQ's list form) as addresses.
fn split_addrs(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The controller embedded in a name server (or run as `rockfish controller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConf {
    pub config: ControllerConfig,
    /// Where the controller keeps its raft log (controllerStorePath).
    pub data_dir: PathBuf,
}

/// The controller from its peers and own id, in rockfish's form (`a:1;b:2;c:3`, id 1..=n) or
/// Apache's (controllerDLegerPeers `n0-a:1;n1-b:2`, controllerDLegerSelfId `n0`). rockfish
/// carries raft on the controller's remoting port: the peers are the addresses brokers name
/// in controllerAddr.
pub fn controller_conf(
    peers: &str,
    self_id: &str,
    data_dir: PathBuf,
) -> Result<ControllerConf, String> {
    let mut names = Vec::new();
    let mut addrs = Vec::new();
    for p in split_addrs(peers) {
        match p.split_once('-') {
            Some((name, addr)) if !name.contains(':') => {
                names.push(name.to_string());
                addrs.push(addr.to_string());
            }
            _ => addrs.push(p),
        }
    }
    if !names.is_empty() && names.len() != addrs.len() {
        return Err(format!(
            "controller peers {peers:?}: name every peer (n0-host:port) or none"
        ));
    }
    let id = match names.iter().position(|n| n == self_id) {
        Some(i) => i as u64 + 1,
        None => self_id.parse::<u64>().map_err(|_| {
            format!(
                "controller self id {self_id:?}: not one of the peers' names or a number from 1"
            )
        })?,
    };
    let config = ControllerConfig {
        id,
        peers: addrs,
        ..ControllerConfig::default()
    };
    config.validate().map_err(|e| format!("controller: {e}"))?;
    Ok(ControllerConf { config, data_dir })
}

/// A name server's properties file (namesrv.conf, `key=value`): its port and, with
/// enableControllerInNamesrv, the embedded controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesrvConf {
    pub listen_port: Option<u16>,
    pub controller: Option<ControllerConf>,
}

pub fn parse_namesrv(text: &str) -> Result<NamesrvConf, String> {
    let mut listen_port = None;
    let mut enabled = false;
    let (mut peers, mut self_id) = (None, None);
    let mut data_dir = PathBuf::from("./rockfish-controller");
    let mut heartbeat_timeout = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            return Err(format!(
                "namesrv.conf line {}: expected key=value, got {line:?}",
                n + 1
            ));
        };
        let (key, v) = (key.trim(), value.trim());
        match key {
            "listenPort" => listen_port = Some(parse_num(key, v)?),
            "enableControllerInNamesrv" => enabled = parse_bool(key, v)?,
            "controllerDLegerPeers" => peers = Some(v.to_string()),
            "controllerDLegerSelfId" => self_id = Some(v.to_string()),
            "controllerStorePath" => data_dir = PathBuf::from(expand_home(v)),
            // A broker silent this long is dead (Apache: the broker's heartbeat timeout).
            "controllerHeartBeatTimeoutMills" | "brokerHeartbeatTimeoutMills" => {
                heartbeat_timeout = Some(parse_num::<u64>(key, v)?)
            }
            "controllerDLegerGroup"
            | "controllerType"
            | "scanNotActiveBrokerInterval"
            | "enableElectUncleanMaster"
            | "notifyBrokerRoleChanged"
            | "rocketmqHome"
            | "kvConfigPath"
            | "configStorePath"
            | "productEnvName"
            | "clusterTest"
            | "orderMessageEnable" => {
                if key == "enableElectUncleanMaster" && parse_bool(key, v)? {
                    return Err("namesrv.conf: enableElectUncleanMaster=true is refused: rockfish elects only from the SyncStateSet".into());
                }
            }
            _ => return Err(format!("namesrv.conf line {}: unknown key {key:?}", n + 1)),
        }
    }
    let controller = if enabled {
        let peers =
            peers.ok_or("namesrv.conf: enableControllerInNamesrv needs controllerDLegerPeers")?;
        let self_id = self_id
            .ok_or("namesrv.conf: enableControllerInNamesrv needs controllerDLegerSelfId")?;
        let mut c = controller_conf(&peers, &self_id, data_dir)?;
        if let Some(t) = heartbeat_timeout {
            c.config.broker_timeout_ms = t;
            c.config
                .validate()
                .map_err(|e| format!("namesrv.conf: {e}"))?;
        }
        Some(c)
    } else {
        None
    };
    Ok(NamesrvConf {
        listen_port,
        controller,
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
    fn parses_controller_mode() {
        let conf = parse(
            "brokerId=2\nbrokerRole=SYNC_MASTER\nenableControllerMode=true\n\
             controllerAddr=127.0.0.1:9876;127.0.0.1:9886\nhaMaxTimeSlaveNotCatchup=8000\n",
        )
        .unwrap();
        assert!(conf.broker.enable_controller_mode);
        assert_eq!(
            conf.broker.controller_addrs,
            vec!["127.0.0.1:9876", "127.0.0.1:9886"]
        );
        assert_eq!(conf.broker.ha_max_time_slave_not_catchup_ms, 8000);
        let e = parse("brokerId=0\nenableControllerMode=true\ncontrollerAddr=a:1\n").unwrap_err();
        assert!(e.contains("brokerId"), "{e}");
        let e = parse("brokerId=1\nenableControllerMode=true\n").unwrap_err();
        assert!(e.contains("controllerAddr"), "{e}");
    }

    #[test]
    fn parses_namesrv_conf_with_an_embedded_controller() {
        let conf = parse_namesrv(
            "listenPort=9886\nenableControllerInNamesrv=true\ncontrollerDLegerGroup=group1\n\
             controllerDLegerPeers=n0-127.0.0.1:9876;n1-127.0.0.1:9886;n2-127.0.0.1:9896\n\
             controllerDLegerSelfId=n1\ncontrollerStorePath=/tmp/ctl\n",
        )
        .unwrap();
        assert_eq!(conf.listen_port, Some(9886));
        let c = conf.controller.unwrap();
        assert_eq!(c.config.id, 2);
        assert_eq!(c.config.peers.len(), 3);
        assert_eq!(c.config.peers[2], "127.0.0.1:9896");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/ctl"));
        assert_eq!(parse_namesrv("listenPort=1\n").unwrap().controller, None);
        let c = controller_conf("a:1;b:2;c:3", "3", PathBuf::from(".")).unwrap();
        assert_eq!(c.config.id, 3);
        let e = controller_conf("a:1;b:2", "n7", PathBuf::from(".")).unwrap_err();
        assert!(e.contains("n7"), "{e}");
        let e = controller_conf("a:1;b:2", "3", PathBuf::from(".")).unwrap_err();
        assert!(e.contains("controller id 3"), "{e}");
        let e = parse_namesrv("enableControllerInNamesrv=true\n").unwrap_err();
        assert!(e.contains("controllerDLegerPeers"), "{e}");
        let e = parse_namesrv("enableElectUncleanMaster=true\n").unwrap_err();
        assert!(e.contains("SyncStateSet"), "{e}");
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
