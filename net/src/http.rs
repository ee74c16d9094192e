//! One HTTP port per process: `/metrics` (Prometheus text of every machine the process
//! runs, with the driver's counts), `/` (the web console, one HTML file with its script) and
//! `/api/*` (the JSON the console reads, from the admin API over the remoting protocol, so
//! it shows the whole cluster the process's name server knows). Each request is its own
//! task; an admin call is bounded by the admin API's timeout.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, BrokerEntry, MessageView, QueueProgress, QueueStatus};
use crate::driver::MetricsProbe;

/// The console page.
pub const CONSOLE_HTML: &str = include_str!("console.html");

/// Topics and groups the overview lists at most (a console, not an export).
const MAX_LISTED: usize = 200;

struct Http {
    probes: Vec<MetricsProbe>,
    namesrv: String,
    /// One admin session for every request: its connections are reused across refreshes.
    admin: Admin,
}

/// Serves on `listener` until the process ends.
pub fn spawn(
    listener: tokio::net::TcpListener,
    probes: Vec<MetricsProbe>,
    namesrv: String,
) -> tokio::task::JoinHandle<()> {
    let admin = Admin::lazy(&namesrv);
    let state = Arc::new(Http {
        probes,
        namesrv,
        admin,
    });
    let app = Router::new()
        .route("/", get(console))
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview))
        .route("/api/message", get(message))
        .route("/api/send", post(send))
        .route("/api/reset", post(reset))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP port stopped");
        }
    })
}

async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        CONSOLE_HTML,
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<Http>>) -> Response {
    let mut snaps = Vec::new();
    for p in &s.probes {
        if let Some(snap) = p.snapshot().await {
            snaps.push(snap);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::encode(snaps),
    )
        .into_response()
}

fn fail(status: StatusCode, e: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": e }))).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BrokerView {
    #[serde(flatten)]
    entry: BrokerEntry,
    put_tps: f64,
    get_tps: f64,
    put_total: u64,
    get_total: u64,
    commit_log_max_offset: u64,
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicView {
    topic: String,
    queues: Vec<QueueStatus>,
    messages: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupView {
    group: String,
    lag: u64,
    queues: Vec<QueueProgress>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    time: i64,
    namesrv: String,
    brokers: Vec<BrokerView>,
    topics: Vec<TopicView>,
    groups: Vec<GroupView>,
}

fn is_internal_topic(t: &str) -> bool {
    t.starts_with("%RETRY%")
        || t.starts_with("%DLQ%")
        || t.starts_with("RMQ_SYS_")
        || t.starts_with("rmq_sys_")
        || t == "TBW102"
        || t == "SCHEDULE_TOPIC_XXXX"
        || t == "OFFSET_MOVED_EVENT"
}

fn is_internal_group(g: &str) -> bool {
    g.starts_with("CID_RMQ_SYS_")
        || g.starts_with("TOOLS_CONSUMER")
        || g.starts_with("FILTERSRV_CONSUMER")
        || g.starts_with("SELF_TEST_")
        || g.starts_with("CID_ONS")
}

/// Everything the console shows at once: brokers with their rates, topics with their
/// queues, groups with their lag per queue.
async fn overview(State(s): State<Arc<Http>>) -> Response {
    let a = &s.admin;
    let entries = match a.brokers().await {
        Ok(b) => b,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
    };
    let first = |v: Option<&String>| -> f64 {
        v.and_then(|t| t.split(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let num = |v: Option<&String>| -> u64 { v.and_then(|t| t.parse().ok()).unwrap_or(0) };
    let mut brokers = Vec::new();
    for entry in entries {
        let view = match a.runtime_info(&entry.addr).await {
            Ok(t) => BrokerView {
                put_tps: first(t.get("putTps")),
                get_tps: first(t.get("getTransferedTps")),
                put_total: num(t.get("msgPutTotalTodayNow")),
                get_total: num(t.get("msgGetTotalTodayNow")),
                commit_log_max_offset: num(t.get("commitLogMaxOffset")),
                entry,
                error: None,
            },
            Err(e) => BrokerView {
                entry,
                put_tps: 0.0,
                get_tps: 0.0,
                put_total: 0,
                get_total: 0,
                commit_log_max_offset: 0,
                error: Some(e),
            },
        };
        brokers.push(view);
    }
    let mut topics = Vec::new();
    let names = a.topic_list().await.unwrap_or_default();
    let broker_names: std::collections::BTreeSet<&str> = brokers
        .iter()
        .map(|b| b.entry.broker_name.as_str())
        .collect();
    let clusters: std::collections::BTreeSet<&str> =
        brokers.iter().map(|b| b.entry.cluster.as_str()).collect();
    for t in names
        .iter()
        .filter(|t| {
            !is_internal_topic(t)
                && !broker_names.contains(t.as_str())
                && !clusters.contains(t.as_str())
        })
        .take(MAX_LISTED)
    {
        if let Ok(queues) = a.topic_status(t).await {
            let messages = queues
                .iter()
                .map(|q| q.max_offset - q.min_offset.min(q.max_offset))
                .sum();
            topics.push(TopicView {
                topic: t.clone(),
                queues,
                messages,
            });
        }
    }
    let mut groups = Vec::new();
    for g in a
        .groups()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|g| !is_internal_group(g))
        .take(MAX_LISTED)
    {
        if let Ok(queues) = a.consume_stats(&g, None).await {
            let queues: Vec<QueueProgress> = queues
                .into_iter()
                .filter(|q| !q.topic.starts_with("%RETRY%"))
                .collect();
            groups.push(GroupView {
                group: g,
                lag: queues.iter().map(|q| q.diff).sum(),
                queues,
            });
        }
    }
    axum::Json(Overview {
        time: crate::now_ms() as i64,
        namesrv: s.namesrv.clone(),
        brokers,
        topics,
        groups,
    })
    .into_response()
}

#[derive(Deserialize)]
struct MessageQuery {
    id: Option<String>,
    topic: Option<String>,
    key: Option<String>,
    broker: Option<String>,
    queue: Option<u32>,
    offset: Option<u64>,
}

/// A message by offset id, by key or unique key (with the topic), or by queue offset.
async fn message(State(s): State<Arc<Http>>, Query(q): Query<MessageQuery>) -> Response {
    let a = &s.admin;
    let found = match (&q.id, &q.topic, &q.key, &q.broker, q.queue, q.offset) {
        (Some(id), Some(topic), ..) => {
            // A client-side id (what a send prints) is a unique key; an offset id names a
            // broker and an offset.
            match a.messages_by_key(topic, id, true).await {
                Ok(m) if !m.is_empty() => Ok(m),
                _ => a.message_by_id(id).await,
            }
        }
        (Some(id), None, ..) => a.message_by_id(id).await,
        (None, Some(topic), Some(key), ..) => a.messages_by_key(topic, key, false).await,
        (None, Some(topic), None, Some(broker), Some(queue), Some(offset)) => a
            .pull_at(topic, broker, queue, offset, 1)
            .await
            .map(|(m, _)| {
                m.into_iter()
                    .filter(|m| m.queue_offset() == offset)
                    .collect()
            }),
        _ => Err("give id, or topic and key, or topic, broker, queue and offset".into()),
    };
    match found {
        Ok(m) => axum::Json(m.iter().map(MessageView::from).collect::<Vec<_>>()).into_response(),
        Err(e) => fail(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct SendRequest {
    topic: String,
    body: String,
    tags: Option<String>,
    keys: Option<String>,
}

/// Sends one test message through a producer started for it.
async fn send(State(s): State<Arc<Http>>, axum::Json(r): axum::Json<SendRequest>) -> Response {
    use crate::sdk::{Message, MessageExt as _, Producer, ProducerConfig};
    let p = Producer::start(ProducerConfig {
        group: "rockfish-console".into(),
        namesrv_addrs: vec![s.namesrv.clone()],
        ..ProducerConfig::default()
    });
    let mut msg = Message::new(&r.topic, r.body.into_bytes());
    if let Some(t) = r.tags.as_deref().filter(|t| !t.is_empty()) {
        msg = msg.with_tags(t);
    }
    if let Some(k) = r.keys.as_deref().filter(|k| !k.is_empty()) {
        msg = msg.with_keys(&k.split(' ').collect::<Vec<_>>());
    }
    let sent = p.send(msg).await;
    p.shutdown().await;
    match sent {
        Ok(r) => axum::Json(serde_json::json!({
            "status": format!("{:?}", r.status),
            "msgId": r.msg_id,
            "offsetMsgId": r.offset_msg_id,
            "brokerName": r.queue.broker_name,
            "queueId": r.queue.queue_id,
            "queueOffset": r.queue_offset,
        }))
        .into_response(),
        Err(e) => fail(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ResetRequest {
    group: String,
    topic: String,
    /// Milliseconds since the epoch (-1: the end of each queue).
    timestamp: i64,
}

async fn reset(State(s): State<Arc<Http>>, axum::Json(r): axum::Json<ResetRequest>) -> Response {
    let a = &s.admin;
    match a.reset_offset_by_time(&r.group, &r.topic, r.timestamp, true).await {
        Ok(Some(table)) => axum::Json(
            table
                .into_iter()
                .map(|(mq, o)| serde_json::json!({"brokerName": mq.broker_name, "queueId": mq.queue_id, "offset": o}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(None) => fail(
            StatusCode::CONFLICT,
            "the broker resets only groups with a consumer online".into(),
        ),
        Err(e) => fail(StatusCode::BAD_REQUEST, e),
    }
}
