//! What applications hand the producer and what they get back: its configuration, messages,
//! send modes, results and errors.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::protocol::MessageQueue;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub group: String,
    pub client_id: String,
    pub namesrv_addrs: Vec<String>,
    pub send_timeout_ms: u64,
    /// Retries of a failed sync or async send, each on another broker where possible.
    pub retry_times: u32,
    /// RocketMQ's sendLatencyFaultEnable.
    pub latency_fault: bool,
    pub route_refresh_ms: u64,
    pub heartbeat_ms: u64,
    /// Queues a topic gets when created through the default topic.
    pub default_topic_queues: u32,
    pub seed: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            group: "DEFAULT_PRODUCER".into(),
            client_id: "127.0.0.1@rockfish".into(),
            namesrv_addrs: vec!["127.0.0.1:9876".into()],
            send_timeout_ms: 3_000,
            retry_times: 2,
            latency_fault: false,
            route_refresh_ms: 30_000,
            heartbeat_ms: 30_000,
            default_topic_queues: 4,
            seed: 0,
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub tags: Option<String>,
    pub keys: Vec<String>,
    pub body: Bytes,
    pub flag: i32,
    /// Extra user properties.
    pub properties: BTreeMap<String, String>,
}

impl Message {
    pub fn new(topic: &str, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.to_string(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// A timer message (RocketMQ 5): delivered `ms` after the broker stores it
    /// (TIMER_DELAY_MS; at most the broker's timerMaxDelaySec ahead, rounded up to its
    /// timerPrecisionMs).
    pub fn with_delay_ms(mut self, ms: u64) -> Message {
        self.properties
            .insert("TIMER_DELAY_MS".into(), ms.to_string());
        self
    }

    /// A timer message delivered at `epoch_ms` (TIMER_DELIVER_MS, by the broker's clock).
    pub fn with_deliver_time_ms(mut self, epoch_ms: u64) -> Message {
        self.properties
            .insert("TIMER_DELIVER_MS".into(), epoch_ms.to_string());
        self
    }

    /// Delivered after the broker's delay level `level` (1-based: with the default
    /// messageDelayLevel, 1 = 1 s, 2 = 5 s, 3 = 10 s … 18 = 2 h); 0 removes the delay.
    pub fn with_delay_level(mut self, level: u32) -> Message {
        if level == 0 {
            self.properties.remove(crate::message::property::DELAY);
        } else {
            self.properties
                .insert(crate::message::property::DELAY.into(), level.to_string());
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    Sync,
    Async,
    Oneway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    SendOk,
    FlushDiskTimeout,
    FlushSlaveTimeout,
    SlaveNotAvailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    /// The client-side unique id (UNIQ_KEY), what RocketMQ SDKs report as msgId.
    pub msg_id: String,
    pub offset_msg_id: String,
    pub queue: MessageQueue,
    pub queue_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no route for topic {0}")]
    NoRoute(String),
    #[error("send timed out after {0} ms")]
    Timeout(u64),
    #[error("broker refused: code {code} {remark}")]
    Broker { code: i32, remark: String },
    #[error("an empty batch")]
    EmptyBatch,
    #[error("a batch's messages must share one topic")]
    MixedBatch,
    /// A success answer without what a success carries (queue id, queue offset, message id):
    /// as the Java client's header check, an error, retried like a failed request.
    #[error("unreadable send response: {0}")]
    MalformedResponse(String),
    /// The producer stopped before the send finished.
    #[error("the producer stopped")]
    Stopped,
}

/// A send's identity, returned by `send` and carried by its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendId(pub u64);

/// A local transaction's outcome (Java's LocalTransactionState).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Show the message to consumers (COMMIT_MESSAGE).
    Commit,
    /// Throw it away (ROLLBACK_MESSAGE).
    Rollback,
    /// Not known yet: the broker asks again later (UNKNOW).
    Unknown,
}

impl TransactionState {
    /// END_TRANSACTION's commitOrRollback value (MessageSysFlag's transaction types).
    pub fn code(self) -> i32 {
        use crate::broker::tx_flag;
        match self {
            TransactionState::Commit => tx_flag::COMMIT,
            TransactionState::Rollback => tx_flag::ROLLBACK,
            TransactionState::Unknown => tx_flag::NOT,
        }
    }
}

/// A broker asking about a transaction it holds undecided (CHECK_TRANSACTION_STATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheck {
    /// The broker that asked: the answer goes back to it.
    pub broker_addr: String,
    /// The half message, shown with its real topic and queue.
    pub msg: crate::message::MessageExt,
    /// The transaction's id (the message's UNIQ_KEY).
    pub transaction_id: String,
    pub tran_state_table_offset: u64,
    pub commit_log_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerEvent {
    /// A sync or async send finished (oneway sends report `Ok` once written).
    Sent {
        id: SendId,
        result: Result<SendResult, SendError>,
        attempts: u32,
    },
    /// A broker asks how a transaction of this producer's group ended: answer it with
    /// `Producer::answer_check` (any producer of the group may, as in RocketMQ).
    CheckTransaction(Box<TransactionCheck>),
}
