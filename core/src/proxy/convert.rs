//! Between RocketMQ 5's gRPC messages and the remoting protocol: a message to send as
//! SEND_MESSAGE_V2's properties, a stored message as the gRPC `Message`, broker answers as
//! gRPC codes, and the proxy's own opaque strings (receipt handles, transaction ids).

use md5::{Digest as _, Md5};

use super::pb::{self, Code};
use crate::broker::timer_property;
use crate::broker::transaction::{PROPERTY_PGROUP, PROPERTY_TRAN_MSG};
use crate::message::{MessageExt, property, push_property};
use crate::remoting::codes::response;

/// A FIFO message's group (MessageConst.PROPERTY_SHARDING_KEY).
pub const PROPERTY_SHARDING_KEY: &str = "__SHARDINGKEY";

/// Properties the broker or the protocol owns: a gRPC client may not set them as user
/// properties, and they are not shown as such.
const SYSTEM_KEYS: &[&str] = &[
    "TAGS",
    "KEYS",
    "UNIQ_KEY",
    "DELAY",
    "WAIT",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "MSG_REGION",
    "TRACE_ON",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "POP_CK",
    "POP_CK_OFFSET",
    "1ST_POP_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "TRANSACTION_CHECK_TIMES",
    "CHECK_IMMUNITY_TIME_IN_SECONDS",
    "SHARDING_KEY",
    "__SHARDINGKEY",
    "TIMER_DELIVER_MS",
    "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS",
    "TIMER_OUT_MS",
    "TIMER_ENQUEUE_MS",
    "TIMER_DEQUEUE_MS",
    "TIMER_ROLL_TIMES",
    "TIMER_DEL_UNIQKEY",
    "__CRC32#",
    "CLUSTER",
    "INNER_MULTI_DISPATCH",
    "INNER_MULTI_QUEUE_OFFSET",
    "INNER_NUM",
];

fn is_system_key(k: &str) -> bool {
    SYSTEM_KEYS.contains(&k)
}

/// A gRPC message ready for SEND_MESSAGE_V2.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
    pub transactional: bool,
    pub message_id: String,
    /// FIFO: the message group (the queue is chosen by its hash).
    pub group: Option<String>,
}

/// A rejected message: the code and why.
pub type Refusal = (Code, String);

/// Reads one message of a SendMessage request.
pub fn outgoing(m: pb::Message, max_body: usize) -> Result<Outgoing, Refusal> {
    let topic = m.topic.map(|t| t.name).unwrap_or_default();
    if topic.is_empty() {
        return Err((Code::IllegalTopic, "the message names no topic".into()));
    }
    if let Err(e) = rockfish_store::message_store::validate_topic(&topic) {
        return Err((Code::IllegalTopic, e.to_string()));
    }
    let sys = m.system_properties.unwrap_or_default();
    if sys.message_id.is_empty() || sys.message_id.len() > 128 {
        return Err((
            Code::IllegalMessageId,
            "system_properties.message_id is empty or over 128 characters".into(),
        ));
    }
    if m.body.is_empty() {
        return Err((Code::MessageBodyEmpty, "the message body is empty".into()));
    }
    if m.body.len() > max_body {
        return Err((
            Code::MessageBodyTooLarge,
            format!(
                "the message body is {} bytes, over the limit of {max_body}",
                m.body.len()
            ),
        ));
    }
    if sys.body_encoding == pb::Encoding::Gzip as i32 {
        return Err((
            Code::Unsupported,
            "gzip-encoded bodies are not accepted; send them as identity".into(),
        ));
    }
    let mut props = Vec::with_capacity(128);
    let mut user: Vec<(&String, &String)> = m.user_properties.iter().collect();
    user.sort(); // a HashMap's order: made stable
    for (k, v) in user {
        if is_system_key(k) || k.is_empty() || has_separator(k) || has_separator(v) {
            return Err((
                Code::IllegalMessagePropertyKey,
                format!("user property {k:?} is reserved or holds a separator character"),
            ));
        }
        push_property(&mut props, k, v);
    }
    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        if has_separator(tag) || tag.contains('|') {
            return Err((
                Code::IllegalMessageTag,
                format!("tag {tag:?} is not allowed"),
            ));
        }
        push_property(&mut props, property::TAGS, tag);
    }
    if !sys.keys.is_empty() {
        if sys.keys.iter().any(|k| has_separator(k) || k.contains(' ')) {
            return Err((
                Code::IllegalMessageKey,
                "a key holds a space or a separator".into(),
            ));
        }
        push_property(&mut props, property::KEYS, &sys.keys.join(" "));
    }
    push_property(&mut props, property::UNIQ_KEY, &sys.message_id);
    let group = sys.message_group.filter(|g| !g.is_empty());
    if let Some(g) = &group {
        if has_separator(g) {
            return Err((
                Code::IllegalMessageGroup,
                "the message group holds a separator".into(),
            ));
        }
        push_property(&mut props, PROPERTY_SHARDING_KEY, g);
    }
    if let Some(ts) = &sys.delivery_timestamp {
        // rocketmq-python-client 5.1.2 puts milliseconds into `seconds`.
        let ms = if ts.seconds > 100_000_000_000 {
            ts.seconds
        } else {
            ts.seconds.saturating_mul(1000) + i64::from(ts.nanos / 1_000_000)
        };
        if ms <= 0 {
            return Err((Code::IllegalDeliveryTime, format!("delivery time {ms} ms")));
        }
        push_property(&mut props, timer_property::DELIVER_MS, &ms.to_string());
    }
    let transactional = sys.message_type == pb::MessageType::Transaction as i32;
    if transactional {
        if group.is_some() || sys.delivery_timestamp.is_some() {
            return Err((
                Code::MessagePropertyConflictWithType,
                "a transactional message cannot carry a message group or a delivery time".into(),
            ));
        }
        push_property(&mut props, PROPERTY_TRAN_MSG, "true");
        push_property(&mut props, PROPERTY_PGROUP, &topic);
    }
    Ok(Outgoing {
        topic,
        properties: props,
        body: m.body,
        transactional,
        message_id: sys.message_id,
        group,
    })
}

/// Whether `s` holds a character the properties string uses as a separator.
fn has_separator(s: &str) -> bool {
    s.contains('\u{1}') || s.contains('\u{2}')
}

/// A stored message as a gRPC `Message`, handed out with `receipt_handle` (none for a
/// transaction check's message).
pub fn incoming(
    m: &MessageExt,
    receipt_handle: Option<String>,
    invisible_ms: Option<u64>,
) -> pb::Message {
    let text = |k: &str| {
        m.property(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let mut user = std::collections::HashMap::new();
    for (k, v) in rockfish_store::record::properties(m.properties()) {
        let k = String::from_utf8_lossy(k);
        if !is_system_key(&k) {
            user.insert(k.into_owned(), String::from_utf8_lossy(v).into_owned());
        }
    }
    let group = text(PROPERTY_SHARDING_KEY);
    let delivery = text(timer_property::DELIVER_MS)
        .or_else(|| text(timer_property::OUT_MS))
        .and_then(|v| v.parse::<i64>().ok());
    let message_type = if group.is_some() {
        pb::MessageType::Fifo
    } else if delivery.is_some() || m.property(property::DELAY).is_some() {
        pb::MessageType::Delay
    } else if text(PROPERTY_TRAN_MSG).as_deref() == Some("true")
        || m.prepared_transaction_offset() > 0
    {
        pb::MessageType::Transaction
    } else {
        pb::MessageType::Normal
    };
    let body = m.body();
    let digest = hex_upper(&Md5::digest(&body));
    let sys = pb::SystemProperties {
        tag: text(property::TAGS),
        keys: text(property::KEYS)
            .map(|k| {
                k.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        message_id: text(property::UNIQ_KEY).unwrap_or_else(|| m.msg_id()),
        body_digest: Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: digest,
        }),
        body_encoding: pb::Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(pb::timestamp_ms(m.born_timestamp())),
        born_host: m.born_host().to_string(),
        store_timestamp: Some(pb::timestamp_ms(m.store_timestamp())),
        store_host: m.store_host().to_string(),
        delivery_timestamp: delivery.map(pb::timestamp_ms),
        receipt_handle,
        queue_id: m.queue_id() as i32,
        queue_offset: Some(m.queue_offset() as i64),
        invisible_duration: invisible_ms.map(pb::duration_ms),
        delivery_attempt: Some(m.reconsume_times().max(0) + 1),
        message_group: group,
        ..Default::default()
    };
    pb::Message {
        topic: Some(pb::Resource {
            name: m.topic().to_string(),
            resource_namespace: String::new(),
        }),
        user_properties: user,
        system_properties: Some(sys),
        body: body.to_vec(),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A broker's refusal as a gRPC code.
pub fn code_of(remoting: i32) -> Code {
    match remoting {
        response::SUCCESS => Code::Ok,
        response::FLUSH_DISK_TIMEOUT => Code::MasterPersistenceTimeout,
        response::FLUSH_SLAVE_TIMEOUT => Code::SlavePersistenceTimeout,
        response::SLAVE_NOT_AVAILABLE => Code::HaNotAvailable,
        response::TOPIC_NOT_EXIST => Code::TopicNotFound,
        response::NO_PERMISSION => Code::Forbidden,
        response::MESSAGE_ILLEGAL | response::INVALID_PARAMETER => Code::BadRequest,
        response::SYSTEM_BUSY | response::POLLING_FULL => Code::TooManyRequests,
        response::SUBSCRIPTION_GROUP_NOT_EXIST => Code::ConsumerGroupNotFound,
        response::SUBSCRIPTION_PARSE_FAILED => Code::IllegalFilterExpression,
        response::NO_MESSAGE => Code::InvalidReceiptHandle,
        _ => Code::InternalServerError,
    }
}

/// What the proxy hands a client to ack a popped message with: where it came from and the
/// broker's receipt. Opaque to clients; space-separated (no name holds a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub broker_name: String,
    pub addr: String,
    /// The topic the message is acked against (the group's pop retry topic for a retry).
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    /// The message's commit log offset (a dead letter is sent back by it).
    pub phys: u64,
    /// The broker's receipt string (extraInfo).
    pub extra: String,
}

const HANDLE_VERSION: &str = "rf1";

impl Handle {
    pub fn encode(&self) -> String {
        format!(
            "{HANDLE_VERSION} {} {} {} {} {} {} {}",
            self.broker_name,
            self.addr,
            self.topic,
            self.queue_id,
            self.offset,
            self.phys,
            self.extra
        )
    }

    pub fn decode(s: &str) -> Option<Handle> {
        let f: Vec<&str> = s.splitn(8, ' ').collect();
        if f.len() != 8 || f[0] != HANDLE_VERSION || s.len() > 2048 {
            return None;
        }
        Some(Handle {
            broker_name: f[1].to_string(),
            addr: f[2].to_string(),
            topic: f[3].to_string(),
            queue_id: f[4].parse().ok()?,
            offset: f[5].parse().ok()?,
            phys: f[6].parse().ok()?,
            extra: f[7].to_string(),
        })
    }
}

/// A transaction as the proxy names it to its producer: the half's broker and offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionId {
    pub addr: String,
    pub commit_log_offset: u64,
    pub table_offset: u64,
}

impl TransactionId {
    pub fn encode(&self) -> String {
        format!(
            "rft1 {} {} {}",
            self.addr, self.commit_log_offset, self.table_offset
        )
    }

    pub fn decode(s: &str) -> Option<TransactionId> {
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() != 4 || f[0] != "rft1" {
            return None;
        }
        Some(TransactionId {
            addr: f[1].to_string(),
            commit_log_offset: f[2].parse().ok()?,
            table_offset: f[3].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_transaction_ids_round_trip_and_garbage_is_refused() {
        let h = Handle {
            broker_name: "b".into(),
            addr: "127.0.0.1:10911".into(),
            topic: "%RETRY%g_T".into(),
            queue_id: 0,
            offset: 5,
            phys: 99,
            extra: "5 1 2 0 1 b 0 5".into(),
        };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        assert_eq!(Handle::decode("rf1 b a T x 5 99 e"), None);
        assert_eq!(Handle::decode("garbage"), None);
        let t = TransactionId {
            addr: "127.0.0.1:10911".into(),
            commit_log_offset: 7,
            table_offset: 3,
        };
        assert_eq!(TransactionId::decode(&t.encode()), Some(t));
        assert_eq!(TransactionId::decode("rft1 a b c"), None);
    }

    #[test]
    fn a_message_carries_its_system_properties_as_rocketmq_names_them() {
        let mut m = pb::Message {
            topic: Some(pb::Resource {
                name: "T".into(),
                resource_namespace: String::new(),
            }),
            body: b"hi".to_vec(),
            system_properties: Some(pb::SystemProperties {
                message_id: "01ABC".into(),
                tag: Some("a".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_group: Some("g".into()),
                delivery_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000_123,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        m.user_properties.insert("color".into(), "red".into());
        let o = outgoing(m.clone(), 1024).unwrap();
        let props = String::from_utf8(o.properties).unwrap();
        for want in [
            "color\u{1}red",
            "TAGS\u{1}a",
            "KEYS\u{1}k1 k2",
            "UNIQ_KEY\u{1}01ABC",
            "__SHARDINGKEY\u{1}g",
            "TIMER_DELIVER_MS\u{1}1700000000123",
        ] {
            assert!(props.contains(want), "{want} in {props:?}");
        }
        m.user_properties.insert("TAGS".into(), "x".into());
        assert_eq!(
            outgoing(m.clone(), 1024).unwrap_err().0,
            Code::IllegalMessagePropertyKey
        );
        m.user_properties.clear();
        assert_eq!(
            outgoing(m.clone(), 1).unwrap_err().0,
            Code::MessageBodyTooLarge
        );
        m.system_properties.as_mut().unwrap().message_id.clear();
        assert_eq!(outgoing(m, 1024).unwrap_err().0, Code::IllegalMessageId);
    }
}
