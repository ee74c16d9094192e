//! The Rust SDK: async handles over the core `Producer` and `Consumer` machines, usable
//! against rockfish or Apache RocketMQ.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rockfish_net::sdk::{
//!     ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, MessageExt, Producer, ProducerConfig, PushConsumer,
//! };
//!
//! let producer = Producer::start(ProducerConfig { group: "demo-producer".into(), ..ProducerConfig::default() });
//! let sent = producer.send(Message::new("TopicTest", "hello").with_tags("TagA")).await?;
//! println!("{:?} {} at {}", sent.status, sent.msg_id, sent.queue_offset);
//!
//! let consumer = PushConsumer::start(
//!     ConsumerConfig { group: "demo-consumer".into(), ..ConsumerConfig::default() }.subscribe("TopicTest", "TagA"),
//!     |msg| {
//!         println!("{} {:?}", msg.msg_id(), msg.body());
//!         ConsumeResult::Success
//!     },
//! );
//! # consumer.shutdown().await; producer.shutdown().await;
//! # Ok(()) }
//! ```

pub mod host;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
pub use rockfish_core::consumer::{ConsumeFrom, ConsumeResult, ConsumerConfig, MessageModel};
use rockfish_core::consumer::{Consumer, ConsumerEvent};
// Core's decoded message; `MessageExt` here is the SDK's builder trait.
use rockfish_core::message::{MessageExt as DecodedMessage, decode_messages};
pub use rockfish_core::producer::{
    Message, ProducerConfig, SendError, SendResult, SendStatus, TransactionState,
};
use rockfish_core::producer::{ProducerEvent, SendId, SendMode};
pub use rockfish_core::protocol::MessageQueue;
use rockfish_core::protocol::TopicRouteData;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Client;
use host::Call;

/// Builder conveniences on the core message type.
pub trait MessageExt {
    fn with_tags(self, tags: &str) -> Message;
    fn with_keys(self, keys: &[&str]) -> Message;
    fn with_property(self, key: &str, value: &str) -> Message;
}

impl MessageExt for Message {
    fn with_tags(mut self, tags: &str) -> Message {
        self.tags = Some(tags.to_string());
        self
    }
    fn with_keys(mut self, keys: &[&str]) -> Message {
        self.keys = keys.iter().map(|k| k.to_string()).collect();
        self
    }
    fn with_property(mut self, key: &str, value: &str) -> Message {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }
}

/// Builder conveniences on the consumer config.
pub trait ConsumerConfigExt {
    /// Subscribes to `topic` with a tag expression ("*", "TagA || TagB").
    fn subscribe(self, topic: &str, expression: &str) -> ConsumerConfig;
    /// Subscribes to `topic` with an SQL92 expression over message properties (Java's
    /// MessageSelector.bySql), e.g. "TAGS IN ('TagA', 'TagB') AND price > 100".
    fn subscribe_sql(self, topic: &str, sql: &str) -> ConsumerConfig;
}

impl ConsumerConfigExt for ConsumerConfig {
    fn subscribe(mut self, topic: &str, expression: &str) -> ConsumerConfig {
        self.subscriptions
            .insert(topic.to_string(), expression.to_string());
        self.sql_topics.remove(topic);
        self
    }
    fn subscribe_sql(mut self, topic: &str, sql: &str) -> ConsumerConfig {
        self.subscriptions
            .insert(topic.to_string(), sql.to_string());
        self.sql_topics.insert(topic.to_string());
        self
    }
}

type Waiters = Arc<Mutex<HashMap<SendId, oneshot::Sender<Result<SendResult, SendError>>>>>;

/// Answers a broker's check-back about a transaction of the producer's group (Java's
/// TransactionListener.checkLocalTransaction): how did the local transaction of this half
/// message end? Runs on a blocking thread.
pub type TransactionChecker = Arc<dyn Fn(&ReceivedMessage) -> TransactionState + Send + Sync>;

/// What `send_in_transaction` did: the half's send, and how the transaction was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSendResult {
    pub send: SendResult,
    pub state: TransactionState,
}

/// A producer. Cheap to share behind an `Arc`; every method may be called concurrently.
pub struct Producer {
    calls: mpsc::UnboundedSender<Call<rockfish_core::producer::Producer>>,
    waiters: Waiters,
    task: JoinHandle<rockfish_core::producer::Producer>,
}

/// A client id unique per SDK instance: RocketMQ keys group membership on it, so two
/// consumers that shared one would both take every queue.
fn client_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("127.0.0.1@{}#{}#{n}", std::process::id(), crate::now_ms())
}

impl Producer {
    /// Starts a producer (must be called inside a tokio runtime).
    pub fn start(config: ProducerConfig) -> Producer {
        Self::start_with(config, None)
    }

    /// Starts a transactional producer: `checker` answers the brokers' check-backs about
    /// transactions of its group left undecided (its own, or those of a producer of the group
    /// that is gone).
    pub fn start_transactional(
        config: ProducerConfig,
        checker: impl Fn(&ReceivedMessage) -> TransactionState + Send + Sync + 'static,
    ) -> Producer {
        Self::start_with(config, Some(Arc::new(checker)))
    }

    fn start_with(mut config: ProducerConfig, checker: Option<TransactionChecker>) -> Producer {
        if config.client_id == ProducerConfig::default().client_id {
            config.client_id = client_id();
        }
        config.seed = crate::now_ms();
        let machine = rockfish_core::producer::Producer::new(config, crate::now_ms());
        let (calls, rx) = mpsc::unbounded_channel();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let w = waiters.clone();
        // Weak: the machine's task ends once every handle is dropped.
        let answers = calls.downgrade();
        let task = tokio::spawn(host::run(machine, rx, move |e| match e {
            ProducerEvent::Sent { id, result, .. } => {
                if let Some(tx) = w.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                    let _ = tx.send(result);
                }
            }
            ProducerEvent::CheckTransaction(check) => {
                let Some(checker) = checker.clone() else {
                    tracing::warn!(
                        transaction = %check.transaction_id,
                        "a transaction check-back, but this producer has no checker"
                    );
                    return;
                };
                let answers = answers.clone();
                tokio::spawn(async move {
                    let queue = MessageQueue {
                        topic: check.msg.topic().to_string(),
                        broker_name: String::new(),
                        queue_id: check.msg.queue_id(),
                    };
                    let msg = ReceivedMessage::new(check.msg.clone(), queue);
                    // The user's checker may block. (madsim's tokio deprecates spawn_blocking,
                    // a real thread: the madsim tier sends no transactions.)
                    #[allow(deprecated)]
                    let state = tokio::task::spawn_blocking(move || checker(&msg))
                        .await
                        .unwrap_or(TransactionState::Unknown);
                    if let Some(calls) = answers.upgrade() {
                        let _ = calls.send(Box::new(
                            move |m: &mut rockfish_core::producer::Producer, _now| {
                                m.answer_check(&check, state)
                            },
                        ));
                    }
                });
            }
        }));
        Producer {
            calls,
            waiters,
            task,
        }
    }

    fn submit(
        &self,
        f: impl FnOnce(&mut rockfish_core::producer::Producer, u64) -> SendId + Send + 'static,
    ) -> oneshot::Receiver<Result<SendResult, SendError>> {
        let (tx, rx) = oneshot::channel();
        let waiters = self.waiters.clone();
        // Registered on the machine's task before the send can complete.
        let _ = self.calls.send(Box::new(move |m, now| {
            let id = f(m, now);
            waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
        }));
        rx
    }

    async fn wait(
        rx: oneshot::Receiver<Result<SendResult, SendError>>,
    ) -> Result<SendResult, SendError> {
        rx.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Sends and waits for the broker's answer (retrying on another broker on failure).
    pub async fn send(&self, msg: Message) -> Result<SendResult, SendError> {
        Self::wait(self.submit(move |m, now| m.send(msg, SendMode::Sync, now))).await
    }

    /// Sends without waiting here; `callback` gets the result.
    pub fn send_async(
        &self,
        msg: Message,
        callback: impl FnOnce(Result<SendResult, SendError>) + Send + 'static,
    ) {
        let rx = self.submit(move |m, now| m.send(msg, SendMode::Async, now));
        tokio::spawn(async move { callback(Self::wait(rx).await) });
    }

    /// Sends without any acknowledgement.
    pub fn send_oneway(&self, msg: Message) {
        let _ = self.calls.send(Box::new(move |m, now| {
            m.send(msg, SendMode::Oneway, now);
        }));
    }

    /// Sends messages of one topic as one batch, stored contiguously in one queue.
    pub async fn send_batch(&self, msgs: Vec<Message>) -> Result<SendResult, SendError> {
        Self::wait(self.submit(move |m, now| m.send_batch(msgs, SendMode::Sync, now))).await
    }

    /// An ordered send: every message with the same `key` goes to the same queue, in order.
    pub async fn send_ordered(&self, msg: Message, key: &str) -> Result<SendResult, SendError> {
        let key = key.to_string();
        Self::wait(self.submit(move |m, now| m.send_ordered(msg, &key, SendMode::Sync, now))).await
    }

    /// Sends a transaction message (Java's sendMessageInTransaction): the half is stored
    /// hidden from consumers; once it is stored (`SendOk`), `local` runs the local
    /// transaction, and its answer commits or rolls back the message (`Unknown` leaves it to
    /// the broker's check-back). A half stored with another status is rolled back without
    /// running `local`, as Java does.
    pub async fn send_in_transaction(
        &self,
        msg: Message,
        local: impl FnOnce(&SendResult) -> TransactionState,
    ) -> Result<TransactionSendResult, SendError> {
        let send = Self::wait(self.submit(move |m, now| m.send_transactional(msg, now))).await?;
        let state = if send.status == SendStatus::SendOk {
            local(&send)
        } else {
            TransactionState::Rollback
        };
        let half = send.clone();
        let _ = self.calls.send(Box::new(move |m, _now| {
            if !m.end_transaction(&half, state) {
                tracing::warn!(msg_id = %half.msg_id, "the half's broker is not known: its check-back will end it");
            }
        }));
        Ok(TransactionSendResult { send, state })
    }

    /// Waits for nothing more and stops.
    pub async fn shutdown(self) {
        drop(self.calls);
        let _ = self.task.await;
    }
}

/// A received message: the decoded record, with RocketMQ's accessors.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    record: DecodedMessage,
    queue: MessageQueue,
}

impl ReceivedMessage {
    pub fn new(record: DecodedMessage, queue: MessageQueue) -> Self {
        ReceivedMessage { record, queue }
    }
    pub fn topic(&self) -> &str {
        self.record.topic()
    }
    pub fn queue(&self) -> &MessageQueue {
        &self.queue
    }
    pub fn queue_offset(&self) -> u64 {
        self.record.queue_offset()
    }
    pub fn body(&self) -> Bytes {
        self.record.body()
    }
    pub fn property(&self, name: &str) -> Option<&str> {
        self.record
            .property(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
    pub fn tags(&self) -> Option<&str> {
        self.property("TAGS")
    }
    pub fn keys(&self) -> Vec<&str> {
        self.property("KEYS")
            .map(|k| k.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
    /// The producer's unique id (UNIQ_KEY), which SDKs call the message id.
    pub fn msg_id(&self) -> &str {
        self.property("UNIQ_KEY").unwrap_or("")
    }
    pub fn store_timestamp(&self) -> i64 {
        self.record.store_timestamp()
    }
    pub fn born_timestamp(&self) -> i64 {
        self.record.born_timestamp()
    }
    pub fn reconsume_times(&self) -> i32 {
        self.record.reconsume_times()
    }
    pub fn record(&self) -> &DecodedMessage {
        &self.record
    }
}

/// A push consumer: messages are pulled for you and handed to the listener.
pub struct PushConsumer {
    calls: mpsc::UnboundedSender<Call<Consumer>>,
    task: JoinHandle<Consumer>,
    workers: Vec<JoinHandle<()>>,
    offset_file: Option<std::path::PathBuf>,
}

/// Options of a push consumer.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Tasks running the listener (RocketMQ's consume threads).
    pub workers: usize,
    /// Where to keep offsets locally (broadcasting consumers), as JSON.
    pub offset_file: Option<std::path::PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            workers: 8,
            offset_file: None,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OffsetFile {
    offsets: Vec<(MessageQueue, u64)>,
}

fn load_offsets(path: &std::path::Path) -> BTreeMap<MessageQueue, u64> {
    match std::fs::read(path) {
        Ok(data) => match serde_json::from_slice::<OffsetFile>(&data) {
            Ok(f) => f.offsets.into_iter().collect(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable offset file; starting without it");
                BTreeMap::new()
            }
        },
        Err(_) => BTreeMap::new(),
    }
}

/// Writes the offsets atomically (a crash leaves the old file or the new one).
fn save_offsets(path: &std::path::Path, offsets: &BTreeMap<MessageQueue, u64>) {
    let file = OffsetFile {
        offsets: offsets.iter().map(|(q, o)| (q.clone(), *o)).collect(),
    };
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?,
        )?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(file = %path.display(), error = %e, "could not save consumer offsets");
    }
}

impl PushConsumer {
    /// Starts consuming. The listener runs on `workers` tasks (RocketMQ's consume threads);
    /// orderly consumers still see each queue's messages one at a time, in order.
    pub fn start(
        config: ConsumerConfig,
        listener: impl Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync + 'static,
    ) -> PushConsumer {
        Self::start_with_workers(config, 8, listener)
    }

    pub fn start_with_workers(
        config: ConsumerConfig,
        workers: usize,
        listener: impl Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync + 'static,
    ) -> PushConsumer {
        Self::start_with_options(
            config,
            PushOptions {
                workers,
                offset_file: None,
            },
            listener,
        )
    }

    /// Starts with explicit options. With `offset_file`, offsets are loaded from it at start and
    /// written to it every 5 s and at shutdown (RocketMQ keeps broadcasting offsets locally).
    pub fn start_with_options(
        mut config: ConsumerConfig,
        options: PushOptions,
        listener: impl Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync + 'static,
    ) -> PushConsumer {
        if config.client_id == ConsumerConfig::default().client_id {
            config.client_id = client_id();
        }
        let workers = options.workers;
        let local = options
            .offset_file
            .as_deref()
            .map(load_offsets)
            .unwrap_or_default();
        let machine = Consumer::new(config, local, crate::now_ms());
        let (calls, rx) = mpsc::unbounded_channel::<Call<Consumer>>();
        let (work_tx, work_rx) = mpsc::unbounded_channel::<(MessageQueue, Vec<DecodedMessage>)>();
        let task = tokio::spawn(host::run(machine, rx, move |e| {
            if let ConsumerEvent::Deliver { mq, msgs } = e {
                let _ = work_tx.send((mq, msgs));
            }
        }));
        // Aborted at shutdown with the workers: it holds a sender, so it must not outlive them.
        let saver = options.offset_file.clone().map(|path| {
            let calls = calls.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let path = path.clone();
                    let sent = calls.send(Box::new(move |m: &mut Consumer, _| {
                        save_offsets(&path, m.offsets())
                    }));
                    if sent.is_err() {
                        break;
                    }
                }
            })
        });
        let offset_file = options.offset_file;
        let listener = Arc::new(listener);
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        let mut workers: Vec<JoinHandle<()>> = (0..workers.max(1))
            .map(|_| {
                let (listener, work_rx, calls) = (listener.clone(), work_rx.clone(), calls.clone());
                tokio::spawn(async move {
                    loop {
                        let next = work_rx.lock().await.recv().await;
                        let Some((mq, msgs)) = next else { break };
                        for rec in msgs {
                            let offset = rec.queue_offset();
                            let msg = ReceivedMessage::new(rec, mq.clone());
                            let result = listener(&msg);
                            let mq = mq.clone();
                            if calls
                                .send(Box::new(move |m, now| m.ack(&mq, offset, result, now)))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        workers.extend(saver);
        PushConsumer {
            calls,
            task,
            workers,
            offset_file,
        }
    }

    /// The queues this consumer holds now.
    pub async fn assigned(&self) -> Vec<MessageQueue> {
        let (tx, rx) = oneshot::channel();
        let _ = self.calls.send(Box::new(move |m, _| {
            let _ = tx.send(m.assigned());
        }));
        rx.await.unwrap_or_default()
    }

    /// Commits offsets (and writes the offset file), leaves the group, stops.
    pub async fn shutdown(self) {
        let file = self.offset_file.clone();
        let _ = self.calls.send(Box::new(move |m: &mut Consumer, now| {
            m.shutdown(now);
            if let Some(path) = file {
                save_offsets(&path, m.offsets());
            }
        }));
        for w in &self.workers {
            w.abort();
        }
        drop(self.calls);
        let _ = self.task.await;
    }
}

/// What one pull returned.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// RocketMQ's response code: SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY, PULL_OFFSET_MOVED.
    pub code: i32,
    pub messages: Vec<ReceivedMessage>,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    /// The broker's remark (why a pull was refused).
    pub remark: Option<String>,
}

/// A pull consumer: you pick the queue and the offset, and keep offsets yourself (or commit
/// them to the broker).
pub struct PullConsumer {
    group: String,
    namesrv: Client,
    brokers: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl PullConsumer {
    pub async fn connect(namesrv: &str, group: &str) -> Result<PullConsumer, crate::ClientError> {
        Ok(PullConsumer {
            group: group.to_string(),
            namesrv: Client::connect(namesrv).await?,
            brokers: Default::default(),
        })
    }

    async fn route(&self, topic: &str) -> Result<TopicRouteData, String> {
        let cmd =
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0).with_ext("topic", topic);
        let r = self
            .namesrv
            .request(cmd, TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if r.code != response::SUCCESS {
            return Err(format!(
                "no route for {topic}: {}",
                r.remark.unwrap_or_default()
            ));
        }
        rockfish_core::protocol::decode_body(&r.body).map_err(|e| e.to_string())
    }

    async fn broker(&self, topic: &str, broker: &str) -> Result<Arc<Client>, String> {
        let route = self.route(topic).await?;
        let addr = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker)
            .and_then(|b| b.master_addr())
            .ok_or_else(|| format!("no master for {broker}"))?
            .to_string();
        let mut brokers = self.brokers.lock().await;
        if let Some(c) = brokers.get(&addr) {
            return Ok(c.clone());
        }
        let c = Arc::new(Client::connect(&addr).await.map_err(|e| e.to_string())?);
        brokers.insert(addr, c.clone());
        Ok(c)
    }

    /// A topic's readable queues, sorted (a queue on a broker whose permission forbids
    /// reading is left out, as Apache's pull consumer does).
    pub async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, String> {
        Ok(self.route(topic).await?.readable_queues(topic))
    }

    /// Pulls up to `max` messages from `offset` matching the tag `expression`.
    pub async fn pull(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
        expression: &str,
    ) -> Result<PullResult, String> {
        self.pull_by(mq, offset, max, "TAG", expression).await
    }

    /// Pulls up to `max` messages from `offset` matching the SQL92 expression `sql`.
    pub async fn pull_sql(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
        sql: &str,
    ) -> Result<PullResult, String> {
        self.pull_by(mq, offset, max, "SQL92", sql).await
    }

    async fn pull_by(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
        expression_type: &str,
        expression: &str,
    ) -> Result<PullResult, String> {
        let b = self.broker(&mq.topic, &mq.broker_name).await?;
        let cmd = RemotingCommand::request(request::PULL_MESSAGE, 0)
            .with_ext("consumerGroup", &self.group)
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", max)
            .with_ext("sysFlag", 4)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 0)
            .with_ext("subscription", expression)
            .with_ext("subVersion", 0)
            .with_ext("expressionType", expression_type);
        let r = b.request(cmd, TIMEOUT).await.map_err(|e| e.to_string())?;
        let num = |k: &str| r.ext(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let messages = if r.code == response::SUCCESS {
            decode_messages(&r.body)
                .map_err(|(_, e)| e.to_string())?
                .into_iter()
                .map(|rec| ReceivedMessage::new(rec, mq.clone()))
                .collect()
        } else {
            Vec::new()
        };
        Ok(PullResult {
            code: r.code,
            messages,
            next_offset: num("nextBeginOffset"),
            min_offset: num("minOffset"),
            max_offset: num("maxOffset"),
            remark: r.remark.clone(),
        })
    }

    /// Stores this group's offset for `mq` on its broker.
    pub async fn commit_offset(&self, mq: &MessageQueue, offset: u64) -> Result<(), String> {
        let b = self.broker(&mq.topic, &mq.broker_name).await?;
        let cmd = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, 0)
            .with_ext("consumerGroup", &self.group)
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id)
            .with_ext("commitOffset", offset);
        let r = b.request(cmd, TIMEOUT).await.map_err(|e| e.to_string())?;
        (r.code == response::SUCCESS)
            .then_some(())
            .ok_or_else(|| format!("commit refused: code {}", r.code))
    }

    /// This group's stored offset for `mq`, if any.
    pub async fn committed_offset(&self, mq: &MessageQueue) -> Result<Option<u64>, String> {
        let b = self.broker(&mq.topic, &mq.broker_name).await?;
        let cmd = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, 0)
            .with_ext("consumerGroup", &self.group)
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id);
        let r = b.request(cmd, TIMEOUT).await.map_err(|e| e.to_string())?;
        Ok((r.code == response::SUCCESS)
            .then(|| r.ext("offset").and_then(|v| v.parse().ok()))
            .flatten())
    }
}
