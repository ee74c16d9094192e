//! The enums of HEART_BEAT's body. Variants are declared in Java's order: SDKs that send enums
//! as numbers (rocketmq-client-cpp) send the Java ordinal, and fastjson reads it as such.

use serde::{Deserialize, Serialize};

/// Java's `ConsumeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumeType {
    /// Pull consumers.
    ConsumeActively,
    /// Push consumers.
    ConsumePassively,
    /// RocketMQ 5's pop consumers.
    ConsumePop,
}

/// Java's `MessageModel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageModel {
    Broadcasting,
    Clustering,
}

/// Java's `ConsumeFromWhere` (the three middle ones are deprecated there, still ordinals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumeFromWhere {
    ConsumeFromLastOffset,
    ConsumeFromLastOffsetAndFromMinWhenBootFirst,
    ConsumeFromMinOffset,
    ConsumeFromMaxOffset,
    ConsumeFromFirstOffset,
    ConsumeFromTimestamp,
}
