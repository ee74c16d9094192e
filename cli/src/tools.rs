//! Client-side tools: `admin` (mqadmin's command names), `produce`, `consume`, `bench`. They
//! speak the wire protocol, so they work against any RocketMQ-compatible broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ops;
use bytes::Bytes;
use clap::{Args, Subcommand};
use rockfish_core::message::MessageExt as DecodedMessage;
use rockfish_core::protocol::{ClusterInfo, TopicList, TopicRouteData, decode_body, to_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;
use rockfish_net::admin::MessageView;
use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, MessageExt, Producer,
    ProducerConfig, PullConsumer, PushConsumer, TransactionState,
};
use rockfish_store::config::SubscriptionGroupConfig;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn call(client: &Client, cmd: RemotingCommand) -> Result<RemotingCommand, String> {
    client
        .request(cmd, TIMEOUT)
        .await
        .map_err(|e| format!("{}: {e}", client.addr))
}

fn ok(resp: &RemotingCommand, what: &str) -> Result<(), String> {
    if resp.code == response::SUCCESS {
        Ok(())
    } else {
        Err(format!(
            "{what}: code {} {}",
            resp.code,
            resp.remark.as_deref().unwrap_or("")
        ))
    }
}

async fn route(ns: &Client, topic: &str) -> Result<TopicRouteData, String> {
    let resp = call(
        ns,
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0).with_ext("topic", topic),
    )
    .await?;
    ok(&resp, &format!("route of {topic}"))?;
    decode_body(&resp.body).map_err(|e| format!("route of {topic}: bad body: {e}"))
}

#[derive(Args)]
pub struct AdminArgs {
    /// Name server address.
    #[arg(
        short = 'n',
        long = "namesrv",
        default_value = "127.0.0.1:9876",
        global = true
    )]
    namesrv: String,
    /// Print JSON instead of mqadmin's text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Subcommand)]
#[command(rename_all = "camelCase")]
enum AdminCmd {
    /// Create or update a topic on every master of a cluster (or one broker).
    UpdateTopic {
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 'c', default_value = "DefaultCluster")]
        cluster: String,
        #[arg(short = 'b')]
        broker: Option<String>,
        #[arg(short = 'r', default_value_t = 8)]
        read: u32,
        #[arg(short = 'w', default_value_t = 8)]
        write: u32,
        #[arg(short = 'p', default_value_t = 6)]
        perm: u32,
        #[arg(short = 'o', default_value_t = false)]
        order: bool,
    },
    /// Delete a topic from a cluster's brokers and the name server.
    DeleteTopic {
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 'c', default_value = "DefaultCluster")]
        cluster: String,
    },
    /// Create or update a consumer group's config on every master of a cluster (or one
    /// broker). Unset flags take SubscriptionGroupConfig's defaults, as mqadmin's do.
    UpdateSubGroup {
        #[arg(short = 'g')]
        group: String,
        #[arg(short = 'c', default_value = "DefaultCluster")]
        cluster: String,
        #[arg(short = 'b')]
        broker: Option<String>,
        /// consumeEnable
        #[arg(short = 's', default_value_t = true, action = clap::ArgAction::Set)]
        consume_enable: bool,
        /// consumeFromMinEnable
        #[arg(short = 'm', default_value_t = true, action = clap::ArgAction::Set)]
        consume_from_min: bool,
        /// consumeBroadcastEnable
        #[arg(short = 'd', default_value_t = true, action = clap::ArgAction::Set)]
        broadcast: bool,
        /// consumeMessageOrderly (RocketMQ 5): 5.x clients of the group consume FIFO
        #[arg(short = 'o', default_value_t = false, action = clap::ArgAction::Set)]
        orderly: bool,
        /// retryQueueNums
        #[arg(short = 'q', default_value_t = 1)]
        retry_queues: i32,
        /// retryMaxTimes: deliveries before a message goes to the group's DLQ
        #[arg(short = 'r', default_value_t = 16)]
        retry_max_times: i32,
        /// brokerId to consume from
        #[arg(short = 'i', default_value_t = 0)]
        broker_id: i64,
        /// whichBrokerWhenConsumeSlowly
        #[arg(short = 'w', default_value_t = 1)]
        slow_broker_id: i64,
        /// notifyConsumerIdsChangedEnable
        #[arg(short = 'a', default_value_t = true, action = clap::ArgAction::Set)]
        notify_ids_changed: bool,
    },
    /// Delete a consumer group's config from every master of a cluster (or one broker).
    DeleteSubGroup {
        #[arg(short = 'g')]
        group: String,
        #[arg(short = 'c', default_value = "DefaultCluster")]
        cluster: String,
        #[arg(short = 'b')]
        broker: Option<String>,
        /// Also remove the group's committed offsets (removeOffset).
        #[arg(short = 'r', default_value_t = false, action = clap::ArgAction::Set)]
        remove_offset: bool,
    },
    /// List every topic the name server knows.
    TopicList,
    /// Print a topic's route.
    TopicRoute {
        #[arg(short = 't')]
        topic: String,
    },
    /// Min and max offsets of each of a topic's queues.
    TopicStatus {
        #[arg(short = 't')]
        topic: String,
    },
    /// Clusters and their brokers.
    ClusterList,
    /// Look a message up by its offset message id.
    QueryMsgById {
        #[arg(short = 'i')]
        id: String,
    },
    /// Look messages up by key.
    QueryMsgByKey {
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 'k')]
        key: String,
    },
    /// Look a message up by its unique key (the client-side msgId a send returns).
    QueryMsgByUniqueKey {
        #[arg(short = 'i')]
        id: String,
        #[arg(short = 't')]
        topic: String,
        /// Print every message stored with this key (a retried send stores it twice), not
        /// only the first.
        #[arg(short = 'a', default_value_t = false)]
        show_all: bool,
    },
    /// Print the message at one offset of one queue (a pull of one message).
    QueryMsgByOffset {
        #[arg(short = 't')]
        topic: String,
        /// The queue's broker, by name.
        #[arg(short = 'b')]
        broker: String,
        #[arg(short = 'i')]
        queue: u32,
        #[arg(short = 'o')]
        offset: u64,
    },
    /// A consumer group's offsets against the queues' max offsets (every topic it has
    /// offsets for, without -t).
    ConsumerProgress {
        #[arg(short = 'g')]
        group: String,
        #[arg(short = 't')]
        topic: Option<String>,
    },
    /// A broker's runtime figures (GET_BROKER_RUNTIME_INFO), one broker or a cluster's masters.
    BrokerStatus {
        #[arg(short = 'b')]
        broker: Option<String>,
        #[arg(short = 'c')]
        cluster: Option<String>,
    },
    /// A consumer group's connected clients and subscriptions.
    ConsumerConnection {
        #[arg(short = 'g')]
        group: String,
    },
    /// A producer group's connected clients.
    ProducerConnection {
        #[arg(short = 'g')]
        group: String,
        #[arg(short = 't')]
        topic: String,
    },
    /// Move a group's offsets on a topic to the first message stored at a time
    /// (now, milliseconds, or yyyy-MM-dd#HH:mm:ss:SSS).
    ResetOffsetByTime {
        #[arg(short = 'g')]
        group: String,
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 's')]
        timestamp: String,
        /// Also move forward (false: only backwards).
        #[arg(short = 'f', default_value_t = true, action = clap::ArgAction::Set)]
        force: bool,
    },
    /// Copy one group's offsets on a topic to another group.
    CloneGroupOffset {
        #[arg(short = 's')]
        src: String,
        #[arg(short = 'd')]
        dest: String,
        #[arg(short = 't')]
        topic: String,
        /// The source group need not be consuming the topic now.
        #[arg(short = 'o', default_value_t = false, action = clap::ArgAction::Set)]
        offline: bool,
    },
    /// Every message of a topic stored between two times, queue by queue.
    PrintMsg {
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 'b')]
        begin: Option<String>,
        #[arg(short = 'e')]
        end: Option<String>,
        #[arg(short = 'd', default_value_t = false, action = clap::ArgAction::Set)]
        print_body: bool,
    },
    /// Send one message and print where it went.
    SendMessage {
        #[arg(short = 't')]
        topic: String,
        #[arg(short = 'p')]
        body: String,
        #[arg(short = 'k')]
        keys: Option<String>,
        #[arg(short = 'c')]
        tags: Option<String>,
    },
    /// A broker's settings (GET_BROKER_CONFIG).
    GetBrokerConfig {
        #[arg(short = 'b')]
        broker: Option<String>,
        #[arg(short = 'c')]
        cluster: Option<String>,
    },
    /// Change a setting while the broker runs (the dynamic keys; kept across restarts).
    UpdateBrokerConfig {
        #[arg(short = 'b')]
        broker: Option<String>,
        #[arg(short = 'c')]
        cluster: Option<String>,
        #[arg(short = 'k')]
        key: String,
        #[arg(short = 'v')]
        value: String,
    },
    /// Round-trip time of sends to each broker of a cluster.
    #[command(name = "clusterRT")]
    ClusterRt {
        #[arg(short = 'a', default_value_t = 100)]
        amount: u64,
        #[arg(short = 's', default_value_t = 128)]
        size: usize,
        #[arg(short = 'c')]
        cluster: Option<String>,
    },
}

fn print_message(rec: &DecodedMessage) {
    let props: BTreeMap<String, String> = rockfish_store::record::properties(rec.properties())
        .filter(|(k, _)| *k != b"__CRC32#")
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    println!(
        "topic={} queue={} queueOffset={} commitLogOffset={} storeTime={} props={:?} body={}",
        rec.topic(),
        rec.queue_id(),
        rec.queue_offset(),
        rec.physical_offset(),
        rec.store_timestamp(),
        props,
        String::from_utf8_lossy(&rec.body())
    );
}

async fn cluster_info(ns: &Client) -> Result<ClusterInfo, String> {
    let resp = call(
        ns,
        RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 0),
    )
    .await?;
    ok(&resp, "cluster info")?;
    decode_body(&resp.body).map_err(|e| format!("cluster info: bad body: {e}"))
}

/// The brokers a command acts on: the one named by `-b`, else every master of the cluster.
async fn targets(
    ns: &Client,
    broker: Option<String>,
    cluster: &str,
) -> Result<Vec<String>, String> {
    match broker {
        Some(b) => Ok(vec![b]),
        None => cluster_masters(ns, cluster).await,
    }
}

async fn cluster_masters(ns: &Client, cluster: &str) -> Result<Vec<String>, String> {
    let info = cluster_info(ns).await?;
    let names = info
        .cluster_addr_table
        .get(cluster)
        .ok_or_else(|| format!("no cluster named {cluster}"))?;
    Ok(names
        .iter()
        .filter_map(|n| {
            info.broker_addr_table
                .get(n)?
                .master_addr()
                .map(String::from)
        })
        .collect())
}

pub async fn admin(args: AdminArgs) -> Result<(), String> {
    let ns = Client::connect(&args.namesrv)
        .await
        .map_err(|e| e.to_string())?;
    let adm = rockfish_net::admin::Admin::connect(&args.namesrv).await?;
    let j = args.json;
    match args.cmd {
        AdminCmd::BrokerStatus { broker, cluster } => {
            ops::broker_status(&adm, broker, cluster, j).await?
        }
        AdminCmd::ConsumerConnection { group } => ops::consumer_connection(&adm, &group, j).await?,
        AdminCmd::ProducerConnection { group, topic } => {
            ops::producer_connection(&adm, &group, &topic, j).await?
        }
        AdminCmd::ResetOffsetByTime {
            group,
            topic,
            timestamp,
            force,
        } => ops::reset_offset_by_time(&adm, &group, &topic, &timestamp, force, j).await?,
        AdminCmd::CloneGroupOffset {
            src,
            dest,
            topic,
            offline,
        } => ops::clone_group_offset(&adm, &src, &dest, &topic, offline).await?,
        AdminCmd::PrintMsg {
            topic,
            begin,
            end,
            print_body,
        } => ops::print_msg(&adm, &topic, begin, end, print_body, j).await?,
        AdminCmd::SendMessage {
            topic,
            body,
            keys,
            tags,
        } => ops::send_message(&args.namesrv, &topic, &body, keys, tags, j).await?,
        AdminCmd::GetBrokerConfig { broker, cluster } => {
            ops::get_broker_config(&adm, broker, cluster, j).await?
        }
        AdminCmd::UpdateBrokerConfig {
            broker,
            cluster,
            key,
            value,
        } => ops::update_broker_config(&adm, broker, cluster, &key, &value).await?,
        AdminCmd::ClusterRt {
            amount,
            size,
            cluster,
        } => ops::cluster_rt(&adm, &args.namesrv, amount, size, cluster, j).await?,
        AdminCmd::UpdateTopic {
            topic,
            cluster,
            broker,
            read,
            write,
            perm,
            order,
        } => {
            for addr in targets(&ns, broker, &cluster).await? {
                let b = Client::connect(&addr).await.map_err(|e| e.to_string())?;
                let cmd = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, 0)
                    .with_ext("topic", &topic)
                    .with_ext("readQueueNums", read)
                    .with_ext("writeQueueNums", write)
                    .with_ext("perm", perm)
                    .with_ext("topicFilterType", "SINGLE_TAG")
                    .with_ext("topicSysFlag", 0)
                    .with_ext("order", order);
                ok(&call(&b, cmd).await?, &format!("update topic on {addr}"))?;
                println!("create topic to {addr} success.");
            }
        }
        AdminCmd::DeleteTopic { topic, cluster } => {
            for addr in cluster_masters(&ns, &cluster).await? {
                let b = Client::connect(&addr).await.map_err(|e| e.to_string())?;
                ok(
                    &call(
                        &b,
                        RemotingCommand::request(request::DELETE_TOPIC_IN_BROKER, 0)
                            .with_ext("topic", &topic),
                    )
                    .await?,
                    "delete in broker",
                )?;
            }
            let cmd = RemotingCommand::request(request::DELETE_TOPIC_IN_NAMESRV, 0)
                .with_ext("topic", &topic);
            ok(&call(&ns, cmd).await?, "delete in name server")?;
            println!("delete topic [{topic}] from cluster [{cluster}] success.");
        }
        AdminCmd::UpdateSubGroup {
            group,
            cluster,
            broker,
            consume_enable,
            consume_from_min,
            broadcast,
            orderly,
            retry_queues,
            retry_max_times,
            broker_id,
            slow_broker_id,
            notify_ids_changed,
        } => {
            let cfg = SubscriptionGroupConfig {
                group_name: group,
                consume_enable,
                consume_from_min_enable: consume_from_min,
                consume_broadcast_enable: broadcast,
                consume_message_orderly: orderly,
                retry_queue_nums: retry_queues,
                retry_max_times,
                broker_id,
                which_broker_when_consume_slowly: slow_broker_id,
                notify_consumer_ids_changed_enable: notify_ids_changed,
            };
            for addr in targets(&ns, broker, &cluster).await? {
                let b = Client::connect(&addr).await.map_err(|e| e.to_string())?;
                let cmd = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, 0)
                    .with_body(to_body(&cfg));
                ok(
                    &call(&b, cmd).await?,
                    &format!("update subscription group on {addr}"),
                )?;
                println!("create subscription group to {addr} success.");
                // As mqadmin prints it (SubscriptionGroupConfig.toString, 5's field too).
                println!(
                    "SubscriptionGroupConfig [groupName={}, consumeEnable={}, \
                     consumeFromMinEnable={}, consumeBroadcastEnable={}, \
                     consumeMessageOrderly={}, retryQueueNums={}, \
                     retryMaxTimes={}, brokerId={}, whichBrokerWhenConsumeSlowly={}, \
                     notifyConsumerIdsChangedEnable={}]",
                    cfg.group_name,
                    cfg.consume_enable,
                    cfg.consume_from_min_enable,
                    cfg.consume_broadcast_enable,
                    cfg.consume_message_orderly,
                    cfg.retry_queue_nums,
                    cfg.retry_max_times,
                    cfg.broker_id,
                    cfg.which_broker_when_consume_slowly,
                    cfg.notify_consumer_ids_changed_enable
                );
            }
        }
        AdminCmd::DeleteSubGroup {
            group,
            cluster,
            broker,
            remove_offset,
        } => {
            for addr in targets(&ns, broker, &cluster).await? {
                let b = Client::connect(&addr).await.map_err(|e| e.to_string())?;
                let cmd = RemotingCommand::request(request::DELETE_SUBSCRIPTIONGROUP, 0)
                    .with_ext("groupName", &group)
                    .with_ext("removeOffset", remove_offset);
                ok(
                    &call(&b, cmd).await?,
                    &format!("delete subscription group on {addr}"),
                )?;
                println!(
                    "delete subscription group [{group}] from broker [{addr}] in cluster [{cluster}] success."
                );
            }
        }
        AdminCmd::TopicList if j => ops::json(&adm.topic_list().await?)?,
        AdminCmd::ClusterList if j => ops::json(&adm.brokers().await?)?,
        AdminCmd::TopicStatus { topic } => ops::topic_status(&adm, &topic, j).await?,
        AdminCmd::ConsumerProgress { group, topic } => {
            ops::consumer_progress(&adm, &group, topic.as_deref(), j).await?
        }
        AdminCmd::TopicList => {
            let resp = call(
                &ns,
                RemotingCommand::request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, 0),
            )
            .await?;
            ok(&resp, "topic list")?;
            let list: TopicList = decode_body(&resp.body).map_err(|e| e.to_string())?;
            for t in list.topic_list {
                println!("{t}");
            }
        }
        AdminCmd::TopicRoute { topic } => {
            let r = route(&ns, &topic).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
            );
        }
        AdminCmd::ClusterList => ops::cluster_list(&adm).await?,
        AdminCmd::QueryMsgById { id } => {
            let found = adm.message_by_id(&id).await?;
            ops::print_messages(&found, j)?
        }
        AdminCmd::QueryMsgByKey { topic, key } => {
            let found = adm.messages_by_key(&topic, &key, false).await?;
            if found.is_empty() {
                return Err(format!("no message with key {key:?} in {topic}"));
            }
            let views: Vec<MessageView> = found.iter().map(MessageView::from).collect();
            if j {
                ops::json(&views)?
            } else {
                ops::print_key_table(&views)
            }
        }
        AdminCmd::QueryMsgByUniqueKey {
            id,
            topic,
            show_all,
        } => {
            // The index holds hashes: the admin API checks what it returns against the key.
            let found = adm.messages_by_key(&topic, &id, true).await?;
            if found.is_empty() {
                return Err(format!("no message with unique key {id:?} in {topic}"));
            }
            let shown = if show_all { found.len() } else { 1 };
            ops::print_messages(&found[..shown], j)?
        }
        AdminCmd::QueryMsgByOffset {
            topic,
            broker,
            queue,
            offset,
        } => {
            // One message, nothing committed, no suspension; no consumer group need exist.
            let (found, resp) = adm.pull_at(&topic, &broker, queue, offset, 1).await?;
            let Some(m) = found.iter().find(|m| m.queue_offset() == offset) else {
                return Err(format!(
                    "no message at offset {offset} of {topic} queue {queue} on {broker} \
                     (the broker answered code {})",
                    resp.code
                ));
            };
            ops::print_messages(std::slice::from_ref(m), j)?
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long)]
    topic: String,
    /// Message body; without it, each line of standard input is one message.
    #[arg(short = 'b', long)]
    body: Option<String>,
    #[arg(long, default_value = "")]
    tag: String,
    #[arg(short = 'k', long, default_value = "")]
    key: String,
    /// Send the body this many times.
    #[arg(short = 'c', long, default_value_t = 1)]
    count: u64,
    #[arg(short = 'g', long, default_value = "rockfish-producer")]
    group: String,
    /// Deliver after the broker's delay level (1 = 1 s, 2 = 5 s, 3 = 10 s … 18 = 2 h with the
    /// default messageDelayLevel).
    #[arg(long, default_value_t = 0)]
    delay_level: u32,
    /// A timer message: delivered this many milliseconds after the broker stores it.
    #[arg(long)]
    deliver_after_ms: Option<u64>,
    /// A user property, `name=value` (repeatable): what SQL92 subscriptions filter on.
    #[arg(short = 'p', long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Send in a transaction whose local transaction ends so (`unknown` leaves it to the
    /// broker's check-back).
    #[arg(long, value_enum)]
    transaction: Option<TxOutcome>,
    /// How this producer answers the broker's check-backs (while it lingers).
    #[arg(long, value_enum, default_value = "commit")]
    check_answer: TxOutcome,
    /// Stay up this long after sending, answering check-backs.
    #[arg(long, default_value_t = 0)]
    linger_secs: u64,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected name=value")),
    }
}

/// A local transaction's outcome, as the CLI takes it.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TxOutcome {
    Commit,
    Rollback,
    Unknown,
}

impl From<TxOutcome> for TransactionState {
    fn from(o: TxOutcome) -> Self {
        match o {
            TxOutcome::Commit => TransactionState::Commit,
            TxOutcome::Rollback => TransactionState::Rollback,
            TxOutcome::Unknown => TransactionState::Unknown,
        }
    }
}

pub async fn produce(args: ProduceArgs) -> Result<(), String> {
    let config = ProducerConfig {
        group: args.group.clone(),
        namesrv_addrs: vec![args.namesrv.clone()],
        ..ProducerConfig::default()
    };
    let answer = TransactionState::from(args.check_answer);
    let producer = Producer::start_transactional(config, move |m| {
        println!(
            "CHECK msgId={} topic={} answered {answer:?}",
            m.msg_id(),
            m.topic()
        );
        answer
    });
    let bodies: Vec<String> = match &args.body {
        Some(b) => (0..args.count).map(|_| b.clone()).collect(),
        None => std::io::stdin().lines().map_while(Result::ok).collect(),
    };
    for body in bodies {
        let mut msg = Message::new(&args.topic, body).with_delay_level(args.delay_level);
        if let Some(ms) = args.deliver_after_ms {
            msg = msg.with_delay_ms(ms);
        }
        if !args.tag.is_empty() {
            msg = msg.with_tags(&args.tag);
        }
        if !args.key.is_empty() {
            msg = msg.with_keys(&[args.key.as_str()]);
        }
        for (k, v) in &args.properties {
            msg = msg.with_property(k, v);
        }
        let (r, state) = match args.transaction {
            Some(outcome) => {
                let t = producer
                    .send_in_transaction(msg, |_| outcome.into())
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                (t.send, Some(t.state))
            }
            None => (
                producer.send(msg).await.map_err(|e| format!("send: {e}"))?,
                None,
            ),
        };
        let status = match r.status {
            rockfish_net::sdk::SendStatus::SendOk => "SEND_OK",
            rockfish_net::sdk::SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
            rockfish_net::sdk::SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
            rockfish_net::sdk::SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        };
        let tx = state.map_or(String::new(), |s| format!(" transaction={s:?}"));
        println!(
            "{status} msgId={} offsetMsgId={} queue={} queueOffset={}{tx}",
            r.msg_id, r.offset_msg_id, r.queue.queue_id, r.queue_offset
        );
    }
    if args.linger_secs > 0 {
        tokio::time::sleep(std::time::Duration::from_secs(args.linger_secs)).await;
    }
    producer.shutdown().await;
    Ok(())
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long)]
    topic: String,
    #[arg(short = 'g', long, default_value = "rockfish-consumer")]
    group: String,
    /// Tag expression ("*", "TagA || TagB").
    #[arg(short = 's', long, default_value = "*")]
    subscription: String,
    /// An SQL92 expression over message properties instead of tags ("price > 100 AND
    /// TAGS IN ('TagA')"; the broker needs enablePropertyFilter, on in standalone).
    #[arg(long, conflicts_with = "subscription")]
    sql: Option<String>,
    /// Start from each queue's first message instead of its end.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

pub async fn consume(args: ConsumeArgs) -> Result<(), String> {
    let pc = PullConsumer::connect(&args.namesrv, &args.group)
        .await
        .map_err(|e| e.to_string())?;
    let mut queues = Vec::new();
    for mq in pc.queues(&args.topic).await? {
        let start = if args.from_beginning {
            0
        } else {
            pc.pull(&mq, u64::MAX / 2, 1, "*").await?.max_offset
        };
        queues.push((mq, start));
    }
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    loop {
        let mut got_any = false;
        for (mq, offset) in queues.iter_mut() {
            let r = match &args.sql {
                Some(sql) => pc.pull_sql(mq, *offset, 32, sql).await?,
                None => pc.pull(mq, *offset, 32, &args.subscription).await?,
            };
            if r.code == response::SUBSCRIPTION_PARSE_FAILED || r.code == response::SYSTEM_ERROR {
                return Err(format!("pull refused: {}", r.remark.unwrap_or_default()));
            }
            if r.code == response::SUCCESS
                || r.code == response::PULL_NOT_FOUND
                || r.code == response::PULL_RETRY_IMMEDIATELY
                || r.code == response::PULL_OFFSET_MOVED
            {
                *offset = r.next_offset;
            }
            for m in &r.messages {
                print_message(m.record());
                seen += 1;
                got_any = true;
                if args.count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
        }
        if got_any {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= Duration::from_secs(args.idle_secs) {
            return Ok(());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: BenchMode,
}

#[derive(Subcommand)]
enum BenchMode {
    /// Send as fast as the in-flight window allows.
    Produce {
        #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
        namesrv: String,
        #[arg(short = 't', long, default_value = "BenchmarkTest")]
        topic: String,
        /// Body size in bytes.
        #[arg(short = 's', long, default_value_t = 1024)]
        size: usize,
        /// Sends in flight at once.
        #[arg(short = 'w', long, default_value_t = 16)]
        inflight: usize,
        /// Messages per send (1 = plain sends; more = batch sends).
        #[arg(short = 'b', long, default_value_t = 1)]
        batch: usize,
        #[arg(short = 'd', long, default_value_t = 10)]
        seconds: u64,
        /// Send round-robin across this many topics (`<topic>-0` .. `<topic>-<N-1>` when
        /// more than one; four sends to each in turn, so each of its queues gets one),
        /// auto-created by a warm-up of `--warmup` sends each before the
        /// measurement.
        #[arg(long, default_value_t = 1)]
        topics: usize,
        /// Warm-up sends per topic (a topic's queues are made by its first sends).
        #[arg(long, default_value_t = 4)]
        warmup: usize,
    },
    /// Push consumers in one group consuming the topic from its start.
    Consume {
        #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
        namesrv: String,
        #[arg(short = 't', long, default_value = "BenchmarkTest")]
        topic: String,
        /// Consumers in the group (clustering).
        #[arg(short = 'c', long, default_value_t = 1)]
        consumers: usize,
        /// At most this long.
        #[arg(short = 'd', long, default_value_t = 10)]
        seconds: u64,
        /// Stop once this many messages arrived (a backlog's size): the rate is over the time
        /// they took.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Sends over RocketMQ 5's gRPC port (the proxy), as `produce` does over remoting.
    GrpcProduce {
        /// The gRPC endpoint (`rockfish standalone` serves 127.0.0.1:8081).
        #[arg(short = 'e', long, default_value = "127.0.0.1:8081")]
        endpoint: String,
        #[arg(short = 't', long, default_value = "BenchmarkTest")]
        topic: String,
        #[arg(short = 's', long, default_value_t = 1024)]
        size: usize,
        #[arg(short = 'w', long, default_value_t = 16)]
        inflight: usize,
        #[arg(short = 'd', long, default_value_t = 10)]
        seconds: u64,
    },
    /// Simple consumers over gRPC (receive up to 32, ack them), one group, from the start.
    GrpcConsume {
        #[arg(short = 'e', long, default_value = "127.0.0.1:8081")]
        endpoint: String,
        #[arg(short = 't', long, default_value = "BenchmarkTest")]
        topic: String,
        #[arg(short = 'g', long, default_value = "BenchmarkGrpcConsumer")]
        group: String,
        #[arg(short = 'c', long, default_value_t = 4)]
        consumers: usize,
        #[arg(short = 'd', long, default_value_t = 10)]
        seconds: u64,
    },
    /// End-to-end latency (send to delivery) at a fixed send rate.
    E2e {
        #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
        namesrv: String,
        #[arg(short = 't', long, default_value = "BenchmarkE2E")]
        topic: String,
        #[arg(short = 's', long, default_value_t = 1024)]
        size: usize,
        /// Messages per second.
        #[arg(short = 'r', long, default_value_t = 1000)]
        rate: u64,
        #[arg(short = 'd', long, default_value_t = 10)]
        seconds: u64,
    },
}

struct Stats {
    msgs: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// The first error seen (printed with the totals: a count alone says nothing of why).
    first_error: std::sync::Mutex<Option<String>>,
    hist: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Stats {
    fn new() -> Arc<Stats> {
        Arc::new(Stats {
            msgs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
            hist: std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ),
        })
    }
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
    fn record(&self, n: u64, bytes: u64, latency_us: Option<u64>) {
        self.msgs.fetch_add(n, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(l) = latency_us {
            let _ = self
                .hist
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(l.max(1));
        }
    }
}

/// Prints a line each second for `seconds`, then the totals. With `until`, stops as soon as
/// that many messages were counted.
async fn report(stats: Arc<Stats>, seconds: u64, what: &str, until: Option<u64>) {
    let start = Instant::now();
    let (mut last_msgs, mut last_bytes) = (0, 0);
    for second in 1..=seconds {
        let tick = start + Duration::from_secs(second);
        let reached = || until.is_some_and(|n| stats.msgs.load(Ordering::Relaxed) >= n);
        while Instant::now() < tick && !reached() {
            tokio::time::sleep(Duration::from_millis(5).min(tick - Instant::now())).await;
        }
        if reached() {
            break;
        }
        let (m, b) = (
            stats.msgs.load(Ordering::Relaxed),
            stats.bytes.load(Ordering::Relaxed),
        );
        let h = stats.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
        println!(
            "{what}: {:>9} msg/s {:>8.1} MB/s | latency us p50 {} p99 {} p999 {} max {} | errors {}",
            m - last_msgs,
            (b - last_bytes) as f64 / 1e6,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            stats.errors.load(Ordering::Relaxed)
        );
        (last_msgs, last_bytes) = (m, b);
    }
    let secs = start.elapsed().as_secs_f64();
    let h = stats.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "{what} total: {} msgs in {:.1}s = {:.0} msg/s, {:.1} MB/s; latency us p50 {} p99 {} p999 {} max {}; errors {}",
        stats.msgs.load(Ordering::Relaxed),
        secs,
        stats.msgs.load(Ordering::Relaxed) as f64 / secs,
        stats.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        stats.errors.load(Ordering::Relaxed)
    );
    if let Some(e) = stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        println!("{what} first error: {e}");
    }
}

/// Sends `per_topic` small messages to every topic, `inflight` at a time, and reports how
/// long creating them took. A topic whose sends all fail is an error.
async fn warm_up(
    producer: &Arc<Producer>,
    names: &Arc<Vec<String>>,
    per_topic: usize,
    inflight: usize,
) -> Result<(), String> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = (names.len() * per_topic) as u64;
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (producer, names, next, failed) = (
            producer.clone(),
            names.clone(),
            next.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut last_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return last_error;
                }
                // A topic's sends in a row: they spread over its queues (see the bench loop).
                let topic = &names[(i as usize / per_topic) % names.len()];
                if let Err(e) = producer.send(Message::new(topic, "warm-up")).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(format!("{topic}: {e}"));
                }
            }
        }));
    }
    let mut last_error = None;
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            last_error = Some(e);
        }
    }
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "warm-up: {} topics, {total} sends in {:.1}s, {failed} failed",
        names.len(),
        start.elapsed().as_secs_f64()
    );
    match last_error {
        Some(e) if failed == total => Err(format!("warm-up sends all failed: {e}")),
        _ => Ok(()),
    }
}

fn bench_producer(namesrv: &str) -> Arc<Producer> {
    Arc::new(Producer::start(ProducerConfig {
        group: "bench-producer".into(),
        namesrv_addrs: vec![namesrv.into()],
        ..ProducerConfig::default()
    }))
}

pub async fn bench(args: BenchArgs) -> Result<(), String> {
    match args.mode {
        BenchMode::GrpcProduce {
            endpoint,
            topic,
            size,
            inflight,
            seconds,
        } => crate::grpc_bench::produce(&endpoint, &topic, size, inflight, seconds).await,
        BenchMode::GrpcConsume {
            endpoint,
            topic,
            group,
            consumers,
            seconds,
        } => crate::grpc_bench::consume(&endpoint, &topic, &group, consumers, seconds).await,
        BenchMode::Produce {
            namesrv,
            topic,
            size,
            inflight,
            batch,
            seconds,
            topics,
            warmup,
        } => {
            let producer = bench_producer(&namesrv);
            let names: Arc<Vec<String>> = Arc::new(if topics <= 1 {
                vec![topic.clone()]
            } else {
                (0..topics).map(|i| format!("{topic}-{i}")).collect()
            });
            // Create the topics (and learn their routes) before measuring.
            warm_up(&producer, &names, warmup.max(1), inflight.max(1)).await?;
            let stats = Stats::new();
            let stop = Arc::new(AtomicBool::new(false));
            let body = Bytes::from(vec![b'x'; size]);
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..inflight.max(1) {
                let (producer, stats, stop, body, names, next) = (
                    producer.clone(),
                    stats.clone(),
                    stop.clone(),
                    body.clone(),
                    names.clone(),
                    next.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        // Runs of four sends per topic: the producer's queue counter is shared
                        // by all topics, so one send per topic in turn would keep each topic
                        // on one queue whenever the topic count is a multiple of four.
                        let i = (next.fetch_add(1, Ordering::Relaxed) / 4) as usize % names.len();
                        let topic = &names[i];
                        let t0 = Instant::now();
                        let n = batch.max(1);
                        let result = if n == 1 {
                            producer.send(Message::new(topic, body.clone())).await
                        } else {
                            producer
                                .send_batch(
                                    (0..n).map(|_| Message::new(topic, body.clone())).collect(),
                                )
                                .await
                        };
                        match result {
                            Ok(_) => stats.record(
                                n as u64,
                                (body.len() * n) as u64,
                                Some(t0.elapsed().as_micros() as u64),
                            ),
                            Err(e) => stats.error(e),
                        }
                    }
                }));
            }
            report(stats, seconds, "produce", None).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            if let Ok(p) = Arc::try_unwrap(producer) {
                p.shutdown().await;
            }
            Ok(())
        }
        BenchMode::Consume {
            namesrv,
            topic,
            consumers,
            seconds,
            count,
        } => {
            let stats = Stats::new();
            let group = format!("bench-consumer-{}", rockfish_net::now_ms());
            let mut started = Vec::new();
            for _ in 0..consumers.max(1) {
                let stats = stats.clone();
                let config = ConsumerConfig {
                    group: group.clone(),
                    namesrv_addrs: vec![namesrv.clone()],
                    consume_from: ConsumeFrom::FirstOffset,
                    ..ConsumerConfig::default()
                }
                .subscribe(&topic, "*");
                started.push(PushConsumer::start(config, move |m| {
                    stats.record(1, m.body().len() as u64, None);
                    ConsumeResult::Success
                }));
            }
            report(stats, seconds, "consume", count).await;
            for c in started {
                c.shutdown().await;
            }
            Ok(())
        }
        BenchMode::E2e {
            namesrv,
            topic,
            size,
            rate,
            seconds,
        } => {
            let producer = bench_producer(&namesrv);
            producer
                .send(Message::new(&topic, "warm-up"))
                .await
                .map_err(|e| format!("first send: {e}"))?;
            let stats = Stats::new();
            let config = ConsumerConfig {
                group: format!("bench-e2e-{}", rockfish_net::now_ms()),
                namesrv_addrs: vec![namesrv.clone()],
                consume_from: ConsumeFrom::LastOffset,
                ..ConsumerConfig::default()
            }
            .subscribe(&topic, "*");
            let s = stats.clone();
            // Latency: the consumer's clock minus the producer's send time carried in the body.
            let consumer = PushConsumer::start(config, move |m| {
                let body = m.body();
                if body.len() >= 16 && &body[..8] == b"e2e-time" {
                    let sent = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0);
                    s.record(1, body.len() as u64, Some(now.saturating_sub(sent)));
                }
                ConsumeResult::Success
            });
            tokio::time::sleep(Duration::from_secs(2)).await; // rebalance and first pulls
            let stop = Arc::new(AtomicBool::new(false));
            let sender = {
                let (producer, stop, topic) = (producer.clone(), stop.clone(), topic.clone());
                tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_micros() as u64)
                            .unwrap_or(0);
                        let mut body = Vec::with_capacity(size.max(16));
                        body.extend_from_slice(b"e2e-time");
                        body.extend_from_slice(&now.to_be_bytes());
                        body.resize(size.max(16), b'x');
                        producer.send_oneway(Message::new(&topic, body));
                    }
                })
            };
            report(stats, seconds, "e2e", None).await;
            stop.store(true, Ordering::Relaxed);
            let _ = sender.await;
            consumer.shutdown().await;
            Ok(())
        }
    }
}
