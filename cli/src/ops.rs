//! The operator commands of `rockfish admin` that read or move a cluster's state through the
//! admin API (`rockfish_net::admin`): output shaped like mqadmin's, or JSON with `--json`.

use std::time::Instant;

use rockfish_net::admin::{Admin, MessageView};
use rockfish_net::sdk::{Message, MessageExt as _, Producer, ProducerConfig};
use serde::Serialize;

/// Prints `value` as JSON.
pub fn json<T: Serialize>(value: &T) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// A time as mqadmin takes it: `now`, milliseconds since the epoch, or
/// `yyyy-MM-dd#HH:mm:ss:SSS` in local time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if s.eq_ignore_ascii_case("now") {
        return Ok(chrono::Local::now().timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d#%H:%M:%S:%3f").map_err(|e| {
        format!("{s:?}: expected now, milliseconds or yyyy-MM-dd#HH:mm:ss:SSS ({e})")
    })?;
    t.and_local_timezone(chrono::Local)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{s:?} does not exist in the local time zone"))
}

/// The broker addresses a command acts on: `-b`, else every master of `-c`.
async fn brokers(
    admin: &Admin,
    broker: Option<String>,
    cluster: Option<&str>,
) -> Result<Vec<String>, String> {
    match broker {
        Some(b) => Ok(vec![b]),
        None => Ok(admin
            .masters(cluster)
            .await?
            .into_iter()
            .map(|(_, addr)| addr)
            .collect()),
    }
}

pub async fn broker_status(
    admin: &Admin,
    broker: Option<String>,
    cluster: Option<String>,
    as_json: bool,
) -> Result<(), String> {
    let many = broker.is_none();
    let mut all = std::collections::BTreeMap::new();
    for addr in brokers(admin, broker, cluster.as_deref()).await? {
        let info = admin.runtime_info(&addr).await?;
        if !as_json {
            for (k, v) in &info {
                if many {
                    println!("{addr:<24} {k:<32}: {v}");
                } else {
                    println!("{k:<32}: {v}");
                }
            }
        }
        all.insert(addr, info);
    }
    if as_json {
        json(&all)?;
    }
    Ok(())
}

/// clusterList as mqadmin prints it: each broker with its version, in/out rates, hours of
/// messages kept and disk use (from its runtime info; blank where a broker did not answer).
pub async fn cluster_list(admin: &Admin) -> Result<(), String> {
    println!(
        "{:<16}  {:<22}  {:<4}  {:<22} {:<16} {:>19} {:>19} {:>10} {:>5} {:>6}",
        "#Cluster Name",
        "#Broker Name",
        "#BID",
        "#Addr",
        "#Version",
        "#InTPS(LOAD)",
        "#OutTPS(LOAD)",
        "#PCWait(ms)",
        "#Hour",
        "#SPACE"
    );
    for b in admin.brokers().await? {
        let info = admin.runtime_info(&b.addr).await.unwrap_or_default();
        let get = |k: &str| info.get(k).cloned().unwrap_or_default();
        let first = |k: &str| -> f64 {
            info.get(k)
                .and_then(|v| v.split(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        let hour = info
            .get("earliestMessageTimeStamp")
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|t| *t > 0)
            .map_or(0.0, |t| {
                (chrono::Local::now().timestamp_millis() - t) as f64 / 3_600_000.0
            });
        let space: f64 = info
            .get("commitLogDiskRatio")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        println!(
            "{:<16}  {:<22}  {:<4}  {:<22} {:<16} {:>19} {:>19} {:>10} {:>5} {:>6}",
            b.cluster,
            b.broker_name,
            b.broker_id,
            b.addr,
            get("brokerVersionDesc"),
            format!(
                "{:9.2}({},{}ms)",
                first("putTps"),
                get("sendThreadPoolQueueSize"),
                get("sendThreadPoolQueueHeadWaitTimeMills")
            ),
            format!(
                "{:9.2}({},{}ms)",
                first("getTransferedTps"),
                get("pullThreadPoolQueueSize"),
                get("pullThreadPoolQueueHeadWaitTimeMills")
            ),
            get("pageCacheLockTimeMills"),
            format!("{hour:2.2}"),
            format!("{space:.4}")
        );
    }
    Ok(())
}

pub async fn consumer_connection(admin: &Admin, group: &str, as_json: bool) -> Result<(), String> {
    let cc = admin.consumer_connection(group).await?;
    if as_json {
        return json(&cc);
    }
    println!(
        "{:<36} {:<22} {:<10} #Version",
        "#ClientId", "#ClientAddr", "#Language"
    );
    for c in &cc.connection_set {
        println!(
            "{:<36} {:<22} {:<10} {}",
            c.client_id,
            c.client_addr,
            c.language,
            rockfish_core::remoting::command::version_name(c.version)
        );
    }
    println!("\nBelow is subscription:");
    println!("{:<20} #SubExpression", "#Topic");
    for s in cc.subscription_table.values() {
        println!("{:<20} {}", s.topic, s.sub_string);
    }
    println!();
    let show = |v: &dyn erased::Show| v.show().unwrap_or_else(|| "null".into());
    println!("ConsumeType: {}", show(&cc.consume_type));
    println!("MessageModel: {}", show(&cc.message_model));
    println!("ConsumeFromWhere: {}", show(&cc.consume_from_where));
    Ok(())
}

/// Enum names as Java prints them (their JSON form).
mod erased {
    pub trait Show {
        fn show(&self) -> Option<String>;
    }
    impl<T: serde::Serialize> Show for Option<T> {
        fn show(&self) -> Option<String> {
            let v = serde_json::to_value(self.as_ref()?).ok()?;
            v.as_str().map(str::to_string)
        }
    }
}

pub async fn producer_connection(
    admin: &Admin,
    group: &str,
    topic: &str,
    as_json: bool,
) -> Result<(), String> {
    let pc = admin.producer_connection(group, topic).await?;
    if as_json {
        return json(&pc);
    }
    for (i, c) in pc.connection_set.iter().enumerate() {
        println!(
            "{:04}  {:<32} {:<22} {:<8} {}",
            i + 1,
            c.client_id,
            c.client_addr,
            c.language,
            rockfish_core::remoting::command::version_name(c.version)
        );
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResetRow {
    broker_name: String,
    queue_id: u32,
    offset: u64,
}

pub async fn reset_offset_by_time(
    admin: &Admin,
    group: &str,
    topic: &str,
    time: &str,
    force: bool,
    as_json: bool,
) -> Result<(), String> {
    let ts = parse_time(time)?;
    let rows: Vec<ResetRow> = match admin.reset_offset_by_time(group, topic, ts, force).await? {
        Some(table) => table
            .into_iter()
            .map(|(mq, offset)| ResetRow {
                broker_name: mq.broker_name,
                queue_id: mq.queue_id,
                offset,
            })
            .collect(),
        // A broker that only resets online groups (Apache 4.x): commit the offsets here,
        // as mqadmin's fallback does.
        None => {
            let mut rows = Vec::new();
            for (name, addr) in admin.topic_masters(topic).await? {
                let progress = admin.consume_stats(group, Some(topic)).await?;
                for p in progress.iter().filter(|p| p.broker_name == name) {
                    let at = admin
                        .queue_offset(&addr, topic, p.queue_id, Some(ts), false)
                        .await?;
                    let offset = if force || at < p.consumer_offset {
                        at
                    } else {
                        p.consumer_offset
                    };
                    admin
                        .commit_offset(&addr, group, topic, p.queue_id, offset)
                        .await?;
                    rows.push(ResetRow {
                        broker_name: name.clone(),
                        queue_id: p.queue_id,
                        offset,
                    });
                }
            }
            rows
        }
    };
    if as_json {
        return json(&rows);
    }
    println!(
        "rollback consumer offset by specified group[{group}], topic[{topic}], force[{force}], timestamp(string)[{time}], timestamp(long)[{ts}]"
    );
    println!(
        "{:<40}  {:<40}  {:<40}",
        "#brokerName", "#queueId", "#offset"
    );
    for r in rows {
        println!(
            "{:<40}  {:<40}  {:<40}",
            front(&r.broker_name, 32),
            r.queue_id,
            r.offset
        );
    }
    Ok(())
}

/// A message as mqadmin's queryMsgById prints it (its body too, and into the file
/// mqadmin writes it to).
pub fn print_detail(v: &MessageView) {
    let line = |k: &str, val: &dyn std::fmt::Display| println!("{k:<20} {val}");
    let prop = |k: &str| {
        v.properties
            .get(k)
            .cloned()
            .unwrap_or_else(|| "null".into())
    };
    line("OffsetID:", &v.offset_msg_id);
    line("Topic:", &v.topic);
    line("Tags:", &format!("[{}]", prop("TAGS")));
    line("Keys:", &format!("[{}]", prop("KEYS")));
    line("Queue ID:", &v.queue_id);
    line("Queue Offset:", &v.queue_offset);
    line("CommitLog Offset:", &v.commit_log_offset);
    line("Reconsume Times:", &v.reconsume_times);
    line("Born Timestamp:", &human(v.born_timestamp));
    line("Store Timestamp:", &human(v.store_timestamp));
    line("Born Host:", &v.born_host);
    line("Store Host:", &v.store_host);
    line("System Flag:", &v.sys_flag);
    let props: Vec<String> = v
        .properties
        .iter()
        .map(|(k, x)| format!("{k}={x}"))
        .collect();
    line("Properties:", &format!("{{{}}}", props.join(", ")));
    let dir = std::env::temp_dir().join("rocketmq/msgbodys");
    let path = dir.join(&v.msg_id);
    if std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, v.body.as_bytes()))
        .is_ok()
    {
        line("Message Body Path:", &path.display());
    }
    line("Message Body:", &v.body);
    println!();
}

/// Messages in detail (or as JSON).
pub fn print_messages(
    found: &[rockfish_core::message::MessageExt],
    as_json: bool,
) -> Result<(), String> {
    let views: Vec<MessageView> = found.iter().map(MessageView::from).collect();
    if as_json {
        return json(&views);
    }
    views.iter().for_each(print_detail);
    Ok(())
}

/// queryMsgByKey's table.
pub fn print_key_table(found: &[MessageView]) {
    println!("{:<50} {:>4} {:>40}", "#Message ID", "#QID", "#Offset");
    for v in found {
        println!("{:<50} {:>4} {:>40}", v.msg_id, v.queue_id, v.queue_offset);
    }
}

/// Java's `UtilAll.frontStringAtLeast`: at most `n` characters.
fn front(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// A time as mqadmin prints it (`yyyy-MM-dd HH:mm:ss,SSS`, local time).
fn human(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S,%3f")
                .to_string()
        })
        .unwrap_or_default()
}

pub async fn topic_status(admin: &Admin, topic: &str, as_json: bool) -> Result<(), String> {
    let queues = admin.topic_status(topic).await?;
    if as_json {
        return json(&queues);
    }
    println!(
        "{:<32}  {:<4}  {:<20}  {:<20}    #Last Updated",
        "#Broker Name", "#QID", "#Min Offset", "#Max Offset"
    );
    for q in queues {
        let last = if q.last_update_timestamp > 0 {
            human(q.last_update_timestamp)
        } else {
            String::new()
        };
        println!(
            "{:<32}  {:<4}  {:<20}  {:<20}    {last}",
            front(&q.broker_name, 32),
            q.queue_id,
            q.min_offset,
            q.max_offset
        );
    }
    Ok(())
}

pub async fn consumer_progress(
    admin: &Admin,
    group: &str,
    topic: Option<&str>,
    as_json: bool,
) -> Result<(), String> {
    let queues = admin.consume_stats(group, topic).await?;
    if as_json {
        return json(&queues);
    }
    println!(
        "{:<64}  {:<32}  {:<4}  {:<20}  {:<20}  {:<20}  #LastTime",
        "#Topic", "#Broker Name", "#QID", "#Broker Offset", "#Consumer Offset", "#Diff"
    );
    let mut total = 0u64;
    for q in &queues {
        total += q.diff;
        let last = if q.last_timestamp > 0 {
            chrono::DateTime::from_timestamp_millis(q.last_timestamp)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default()
        } else {
            "N/A".into()
        };
        println!(
            "{:<64}  {:<32}  {:<4}  {:<20}  {:<20}  {:<20}  {last}",
            front(&q.topic, 64),
            front(&q.broker_name, 32),
            q.queue_id,
            q.broker_offset,
            q.consumer_offset,
            q.diff
        );
    }
    let mut tps = 0.0;
    if let Ok(masters) = admin.masters(None).await {
        for (_, addr) in masters {
            if let Ok(info) = admin.runtime_info(&addr).await {
                tps += info
                    .get("getTransferedTps")
                    .and_then(|v| v.split(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    println!();
    println!("Consume TPS: {tps:.2}");
    println!("Diff Total: {total}");
    Ok(())
}

pub async fn clone_group_offset(
    admin: &Admin,
    src: &str,
    dest: &str,
    topic: &str,
    offline: bool,
) -> Result<(), String> {
    admin.clone_group_offset(src, dest, topic, offline).await?;
    println!("clone group offset success. srcGroup[{src}], destGroup=[{dest}], topic[{topic}]");
    Ok(())
}

pub async fn get_broker_config(
    admin: &Admin,
    broker: Option<String>,
    cluster: Option<String>,
    as_json: bool,
) -> Result<(), String> {
    let mut all = std::collections::BTreeMap::new();
    for addr in brokers(admin, broker, cluster.as_deref()).await? {
        let props = admin.broker_config(&addr).await?;
        if !as_json {
            println!("============{addr}============");
            for (k, v) in &props {
                println!("{k:<50}=  {v}");
            }
        }
        all.insert(addr, props);
    }
    if as_json {
        json(&all)?;
    }
    Ok(())
}

pub async fn update_broker_config(
    admin: &Admin,
    broker: Option<String>,
    cluster: Option<String>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    for addr in brokers(admin, broker, cluster.as_deref()).await? {
        admin.update_broker_config(&addr, key, value).await?;
        println!("update broker config success, {addr}");
    }
    Ok(())
}

fn producer(namesrv: &str, group: &str) -> Producer {
    Producer::start(ProducerConfig {
        group: group.into(),
        namesrv_addrs: vec![namesrv.into()],
        ..ProducerConfig::default()
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SendRow {
    broker_name: String,
    queue_id: u32,
    send_result: String,
    msg_id: String,
}

pub async fn send_message(
    namesrv: &str,
    topic: &str,
    body: &str,
    keys: Option<String>,
    tags: Option<String>,
    as_json: bool,
) -> Result<(), String> {
    let p = producer(namesrv, "rockfish-admin-producer");
    let mut msg = Message::new(topic, body.as_bytes().to_vec());
    if let Some(t) = tags {
        msg = msg.with_tags(&t);
    }
    if let Some(k) = keys {
        let ks: Vec<&str> = k.split(' ').collect();
        msg = msg.with_keys(&ks);
    }
    let sent = p.send(msg).await;
    p.shutdown().await;
    let row = match sent {
        Ok(r) => SendRow {
            broker_name: r.queue.broker_name,
            queue_id: r.queue.queue_id,
            send_result: format!("{:?}", r.status)
                .to_ascii_uppercase()
                .replace("SENDOK", "SEND_OK"),
            msg_id: r.msg_id,
        },
        Err(e) => return Err(format!("send to {topic}: {e}")),
    };
    if as_json {
        return json(&row);
    }
    println!(
        "{:<32}  {:<4}  {:<20}    #MsgId",
        "#Broker Name", "#QID", "#Send Result"
    );
    println!(
        "{:<32}  {:<4}  {:<20}    {}",
        row.broker_name, row.queue_id, row.send_result, row.msg_id
    );
    Ok(())
}

/// printMsg: every message of the topic stored between two times, queue by queue.
pub async fn print_msg(
    admin: &Admin,
    topic: &str,
    begin: Option<String>,
    end: Option<String>,
    print_body: bool,
    as_json: bool,
) -> Result<(), String> {
    let begin = begin.as_deref().map(parse_time).transpose()?;
    let end = end.as_deref().map(parse_time).transpose()?;
    let mut all: Vec<MessageView> = Vec::new();
    for q in admin.topic_status(topic).await? {
        let addr = admin
            .topic_masters(topic)
            .await?
            .into_iter()
            .find(|(n, _)| *n == q.broker_name)
            .map(|(_, a)| a)
            .ok_or_else(|| format!("no master for {}", q.broker_name))?;
        let from = match begin {
            Some(t) => {
                admin
                    .queue_offset(&addr, topic, q.queue_id, Some(t), false)
                    .await?
            }
            None => q.min_offset,
        };
        let to = match end {
            Some(t) => {
                admin
                    .queue_offset(&addr, topic, q.queue_id, Some(t), false)
                    .await?
            }
            None => q.max_offset,
        };
        if !as_json {
            println!(
                "minOffset={from}, maxOffset={to}, MessageQueue [topic={topic}, brokerName={}, queueId={}]",
                q.broker_name, q.queue_id
            );
        }
        let mut at = from;
        while at < to {
            let (msgs, resp) = admin
                .pull_at(topic, &q.broker_name, q.queue_id, at, 32)
                .await?;
            if msgs.is_empty() {
                let next: u64 = resp
                    .ext("nextBeginOffset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(to);
                if next <= at {
                    break;
                }
                at = next;
                continue;
            }
            for m in msgs.iter().filter(|m| m.queue_offset() < to) {
                let v = MessageView::from(m);
                if !as_json {
                    println!(
                        "MSGID: {} {} BODY: {}",
                        v.msg_id,
                        describe(&v),
                        if print_body {
                            v.body.as_str()
                        } else {
                            "NOT PRINT BODY"
                        }
                    );
                }
                all.push(v);
            }
            at = msgs.last().map_or(to, |m| m.queue_offset() + 1);
        }
        if !as_json {
            println!(
                "MessageQueue [topic={topic}, brokerName={}, queueId={}] print msg finished. status=NO_NEW_MSG, offset={at}",
                q.broker_name, q.queue_id
            );
            println!("--------------------------------------------------------");
        }
    }
    if as_json {
        json(&all)?;
    }
    Ok(())
}

/// A message as Java's `MessageExt.toString()` lays it out.
pub fn describe(v: &MessageView) -> String {
    format!(
        "MessageExt [brokerName=, queueId={}, storeSize=0, queueOffset={}, sysFlag=0, bornTimestamp={}, bornHost={}, storeTimestamp={}, storeHost={}, msgId={}, commitLogOffset={}, bodyCRC=0, reconsumeTimes={}, preparedTransactionOffset=0, toString()=Message{{topic='{}', flag=0, properties={:?}, body=[{} bytes], transactionId='null'}}]",
        v.queue_id,
        v.queue_offset,
        v.born_timestamp,
        v.born_host,
        v.store_timestamp,
        v.store_host,
        v.msg_id,
        v.commit_log_offset,
        v.reconsume_times,
        v.topic,
        v.properties,
        v.body.len()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RtRow {
    cluster: String,
    broker_name: String,
    rt_ms: f64,
    success_count: u64,
    fail_count: u64,
}

/// clusterRT: `amount` sends of `size` bytes to each master's own topic (named after the
/// broker, as Apache brokers create it), average round trip of those that succeeded.
pub async fn cluster_rt(
    admin: &Admin,
    namesrv: &str,
    amount: u64,
    size: usize,
    cluster: Option<String>,
    as_json: bool,
) -> Result<(), String> {
    let p = producer(namesrv, "rockfish-cluster-rt");
    let info = admin.cluster_info().await?;
    let body = vec![b'a'; size];
    let mut rows = Vec::new();
    for (c, names) in &info.cluster_addr_table {
        if cluster.as_deref().is_some_and(|want| want != c) {
            continue;
        }
        for name in names {
            let (mut ok, mut failed, mut total) = (0u64, 0u64, 0f64);
            for _ in 0..amount {
                let start = Instant::now();
                match p.send(Message::new(name, body.clone())).await {
                    Ok(_) => {
                        ok += 1;
                        total += start.elapsed().as_secs_f64() * 1000.0;
                    }
                    Err(_) => failed += 1,
                }
            }
            rows.push(RtRow {
                cluster: c.clone(),
                broker_name: name.clone(),
                rt_ms: if ok > 0 { total / ok as f64 } else { 0.0 },
                success_count: ok,
                fail_count: failed,
            });
        }
    }
    p.shutdown().await;
    if as_json {
        return json(&rows);
    }
    println!(
        "{:<24}  {:<24}  {:<4}  {:<8}  {:<8}",
        "#Cluster Name", "#Broker Name", "#RT", "#successCount", "#failCount"
    );
    for r in rows {
        println!(
            "{:<24}  {:<24}  {:<8}  {:<16}  {:<16}",
            r.cluster,
            r.broker_name,
            format!("{:.2}", r.rt_ms),
            r.success_count,
            r.fail_count
        );
    }
    Ok(())
}
