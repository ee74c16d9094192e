//! What pop consumption puts on the wire, as RocketMQ 5 shapes it: the receipt string
//! (`extraInfo`, the POP_CK property), the response header's offset strings, and the
//! BATCH_ACK_MESSAGE body.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::remoting::RemotingCommand;

/// reviveQid naming an orderly pop (Apache's POP_ORDER_REVIVE_QUEUE).
pub const ORDER_REVIVE_QID: i32 = 999;
/// The reviveQid rockfish hands out for every other pop: it keeps one journal, not Apache's
/// eight revive queues, and ignores the value when it comes back.
pub const REVIVE_QID: i32 = 0;

/// A pop retry topic: where a group's un-acked messages of `topic` come back
/// (`KeyBuilder.buildPopRetryTopic`, V1).
pub fn pop_retry_topic(group: &str, topic: &str) -> String {
    format!("%RETRY%{group}_{topic}")
}

/// The retry flag of a receipt: "0" for a message of the topic itself, "1" for one of the
/// group's pop retry topic (the V2 form, `+`, is "2").
pub fn retry_flag(topic: &str) -> &'static str {
    if !topic.starts_with("%RETRY%") {
        "0"
    } else if topic.contains('+') {
        "2"
    } else {
        "1"
    }
}

/// The topic a receipt names: the request's topic for flag "0", else the group's pop retry
/// topic of it (`ExtraInfoUtil.getRealTopic`); a topic already a retry topic stays.
pub fn real_topic(flag: &str, topic: &str, group: &str) -> String {
    if topic.starts_with("%RETRY%") {
        return topic.to_string();
    }
    match flag {
        "1" => pop_retry_topic(group, topic),
        "2" => format!("%RETRY%{group}+{topic}"),
        _ => topic.to_string(),
    }
}

/// A parsed receipt: `ckQueueOffset popTime invisibleTime reviveQid retry brokerName
/// queueId [msgOffset [commitLogOffset]]`, space separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub ck_offset: u64,
    pub pop_time: i64,
    pub invisible_ms: i64,
    pub revive_qid: i32,
    pub retry: String,
    pub broker_name: String,
    pub queue_id: u32,
    pub offset: Option<u64>,
}

impl Receipt {
    pub fn parse(s: &str) -> Result<Receipt, String> {
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 7 {
            return Err(format!(
                "extraInfo {s:?} has {} fields, at least 7 expected",
                f.len()
            ));
        }
        let bad = |i: usize| format!("extraInfo {s:?}: field {i} ({:?}) is not a number", f[i]);
        Ok(Receipt {
            ck_offset: f[0].parse().map_err(|_| bad(0))?,
            pop_time: f[1].parse().map_err(|_| bad(1))?,
            invisible_ms: f[2].parse().map_err(|_| bad(2))?,
            revive_qid: f[3].parse().map_err(|_| bad(3))?,
            retry: f[4].to_string(),
            broker_name: f[5].to_string(),
            queue_id: f[6].parse().map_err(|_| bad(6))?,
            offset: match f.get(7) {
                Some(o) => Some(o.parse().map_err(|_| bad(7))?),
                None => None,
            },
        })
    }

    pub fn is_order(&self) -> bool {
        self.revive_qid == ORDER_REVIVE_QID
    }
}

/// The receipt of one message, as the client builds it (and the broker for a retry
/// message's POP_CK property).
#[allow(clippy::too_many_arguments)]
pub fn receipt(
    ck_offset: u64,
    pop_time: i64,
    invisible_ms: i64,
    revive_qid: i32,
    topic: &str,
    broker_name: &str,
    queue_id: u32,
    offset: u64,
) -> String {
    format!(
        "{ck_offset} {pop_time} {invisible_ms} {revive_qid} {} {broker_name} {queue_id} {offset}",
        retry_flag(topic)
    )
}

/// ACK_MESSAGE for one popped message: its group, the topic its receipt names (a retry
/// message's is the pop retry topic), queue, receipt and queue offset.
pub fn ack_request(
    opaque: i32,
    group: &str,
    topic: &str,
    queue_id: u32,
    extra_info: &str,
    offset: u64,
) -> RemotingCommand {
    RemotingCommand::request(crate::remoting::codes::request::ACK_MESSAGE, opaque)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id)
        .with_ext("extraInfo", extra_info)
        .with_ext("offset", offset)
}

/// One message of a pop's answer with its receipt (extraInfo).
#[derive(Debug)]
pub struct Popped {
    pub msg: crate::message::MessageExt,
    pub extra: String,
    pub receipt: Receipt,
}

/// The messages of a pop's SUCCESS answer from broker `broker_name`, each with its receipt:
/// built from the header (popTime, invisibleTime, reviveQid, startOffsetInfo) as Apache's
/// client builds it, or the POP_CK a retry message carries. `Err` says what is missing.
pub fn popped(cmd: &RemotingCommand, broker_name: &str) -> Result<Vec<Popped>, String> {
    let field = |k: &str| {
        cmd.ext(k)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("the pop's answer lacks {k}"))
    };
    let (pop_time, invisible, revive_qid) = (
        field("popTime")?,
        field("invisibleTime")?,
        field("reviveQid")?,
    );
    // "retry-flag queueId startOffset" entries; a normal topic's messages use flag 0.
    let starts: BTreeMap<String, u64> = cmd
        .ext("startOffsetInfo")
        .unwrap_or("")
        .split(';')
        .filter_map(|e| {
            let f: Vec<&str> = e.split(' ').collect();
            (f.len() == 3).then(|| Some((format!("{}@{}", f[0], f[1]), f[2].parse().ok()?)))?
        })
        .collect();
    let msgs = crate::message::decode_messages(&cmd.body)
        .map_err(|(_, e)| format!("the pop's messages do not decode: {e}"))?;
    let mut out = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let extra = match msg.property(super::PROPERTY_POP_CK) {
            Some(ck) => String::from_utf8_lossy(ck).into_owned(),
            None => {
                let start = *starts
                    .get(&format!("0@{}", msg.queue_id()))
                    .ok_or_else(|| format!("no start offset for queue {}", msg.queue_id()))?;
                receipt(
                    start,
                    pop_time,
                    invisible,
                    revive_qid as i32,
                    msg.topic(),
                    broker_name,
                    msg.queue_id(),
                    msg.queue_offset(),
                )
            }
        };
        let receipt = Receipt::parse(&extra)?;
        out.push(Popped {
            msg,
            extra,
            receipt,
        });
    }
    Ok(out)
}

/// A message's receipt after a change of invisibility, as Apache's client rebuilds it from
/// the answer (popTime, invisibleTime, reviveQid): its own checkpoint starts at the message,
/// except an orderly one's, which keeps its pop's.
pub fn changed_receipt(
    old: &str,
    real_topic: &str,
    pop_time: i64,
    invisible_ms: i64,
    revive_qid: i32,
) -> Result<String, String> {
    let r = Receipt::parse(old)?;
    let offset = r
        .offset
        .ok_or_else(|| format!("extraInfo {old:?} names no message offset"))?;
    let ck = if r.is_order() { r.ck_offset } else { offset };
    Ok(receipt(
        ck,
        pop_time,
        invisible_ms,
        revive_qid,
        real_topic,
        &r.broker_name,
        r.queue_id,
        offset,
    ))
}

/// Appends one `startOffsetInfo` entry: `flag queueId startOffset`.
pub fn push_start_offset(out: &mut String, topic: &str, queue_id: u32, start: u64) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(&format!("{} {queue_id} {start}", retry_flag(topic)));
}

/// Appends one `msgOffsetInfo` entry: `flag queueId o1,o2,…`.
pub fn push_msg_offsets(out: &mut String, topic: &str, queue_id: u32, offsets: &[u64]) {
    if !out.is_empty() {
        out.push(';');
    }
    let list: Vec<String> = offsets.iter().map(u64::to_string).collect();
    out.push_str(&format!(
        "{} {queue_id} {}",
        retry_flag(topic),
        list.join(",")
    ));
}

/// Appends an orderly pop's `orderCountInfo` for one queue: each offset delivered before
/// (`flag qo<queueId>%<offset> count`), then the queue's least count for older clients.
pub fn push_order_counts(out: &mut String, topic: &str, queue_id: u32, counts: &[(u64, u32)]) {
    let flag = retry_flag(topic);
    let mut min = u32::MAX;
    for &(offset, count) in counts {
        min = min.min(count);
        if count > 0 {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(&format!("{flag} qo{queue_id}%{offset} {count}"));
        }
    }
    if min != u32::MAX && counts.iter().any(|&(_, c)| c > 0) {
        out.push_str(&format!(";{flag} {queue_id} {min}"));
    }
}

/// BATCH_ACK_MESSAGE's body (`BatchAckMessageRequestBody`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAckBody {
    #[serde(default)]
    pub broker_name: Option<String>,
    #[serde(default)]
    pub acks: Vec<BatchAck>,
}

/// One checkpoint's acks (`BatchAck`, short keys as fastjson writes them; long ones read too).
#[derive(Debug, Deserialize)]
pub struct BatchAck {
    #[serde(rename = "c", alias = "consumerGroup")]
    pub group: String,
    #[serde(rename = "t", alias = "topic")]
    pub topic: String,
    #[serde(rename = "r", alias = "retry", default)]
    pub retry: Option<String>,
    #[serde(rename = "so", alias = "startOffset")]
    pub start: i64,
    #[serde(rename = "q", alias = "queueId")]
    pub queue_id: i64,
    #[serde(rename = "rq", alias = "reviveQueueId", default)]
    pub revive_qid: Option<i64>,
    #[serde(rename = "pt", alias = "popTime")]
    pub pop_time: i64,
    #[serde(rename = "it", alias = "invisibleTime", default)]
    pub invisible_ms: Option<i64>,
    /// `java.util.BitSet.toByteArray()`, base64: bit i acks offset `start + i`.
    #[serde(rename = "b", alias = "bitSet")]
    pub bits: String,
}

/// The offsets a batch ack's bit set names, at most `limit` of them.
pub fn bitset_offsets(start: u64, bits: &str, limit: usize) -> Result<Vec<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(bits.trim())
        .map_err(|e| format!("batch ack bit set is not base64: {e}"))?;
    let mut out = Vec::new();
    for (i, byte) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                if out.len() == limit {
                    return Err(format!("batch ack names more than {limit} offsets"));
                }
                out.push(start + (i * 8 + bit) as u64);
            }
        }
    }
    Ok(out)
}

/// The bit set a client sends for `offsets` past `start` (tests and the Rust SDK).
pub fn bitset_of(start: u64, offsets: &[u64]) -> String {
    let mut bytes = Vec::new();
    for &o in offsets {
        let i = (o - start) as usize;
        if bytes.len() <= i / 8 {
            bytes.resize(i / 8 + 1, 0u8);
        }
        bytes[i / 8] |= 1 << (i % 8);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_name_their_real_topic() {
        let r = receipt(10, 1_700_000_000_000, 30_000, 0, "%RETRY%g_T", "b1", 0, 12);
        assert_eq!(r, "10 1700000000000 30000 0 1 b1 0 12");
        let p = Receipt::parse(&r).unwrap();
        assert_eq!((p.ck_offset, p.offset, p.queue_id), (10, Some(12), 0));
        assert_eq!(real_topic(&p.retry, "T", "g"), "%RETRY%g_T");
        assert_eq!(real_topic("0", "T", "g"), "T");
        assert!(Receipt::parse("1 2 3").is_err());
        assert!(Receipt::parse("a 2 3 4 0 b 1 2").is_err());
    }

    #[test]
    fn bit_sets_are_java_bitset_bytes() {
        let b = bitset_of(100, &[100, 103, 109]);
        assert_eq!(bitset_offsets(100, &b, 64).unwrap(), vec![100, 103, 109]);
        // BitSet{0, 9}.toByteArray() = [1, 2]
        assert_eq!(bitset_of(0, &[0, 9]), "AQI=");
        assert!(bitset_offsets(0, "AQI=", 1).is_err());
        assert!(bitset_offsets(0, "!!", 8).is_err());
    }

    #[test]
    fn offset_strings_are_apaches() {
        let mut s = String::new();
        push_start_offset(&mut s, "T", 3, 7);
        push_start_offset(&mut s, "%RETRY%g_T", 0, 2);
        assert_eq!(s, "0 3 7;1 0 2");
        let mut m = String::new();
        push_msg_offsets(&mut m, "T", 3, &[7, 9]);
        assert_eq!(m, "0 3 7,9");
        let mut c = String::new();
        push_order_counts(&mut c, "T", 1, &[(4, 2), (5, 0)]);
        assert_eq!(c, "0 qo1%4 2;0 1 0");
    }
}
