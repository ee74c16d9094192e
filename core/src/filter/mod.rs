//! Message filters of a subscription: tags (the consume queue's tag code, checked before a
//! record is read) or SQL92 over the record's properties (checked after).

pub mod sql;

use std::sync::Arc;

pub use sql::{MAX_SQL_DEPTH, MAX_SQL_LEN, SqlError, SqlFilter};

use crate::message::TagFilter;

/// RocketMQ's ExpressionType names.
pub mod expression_type {
    pub const TAG: &str = "TAG";
    pub const SQL92: &str = "SQL92";
}

/// Whether an expression type is a tag expression (absent and empty are, as in Apache).
pub fn is_tag_type(expression_type: Option<&str>) -> bool {
    match expression_type {
        None => true,
        Some(t) => t.is_empty() || t == expression_type::TAG,
    }
}

/// A subscription's filter, compiled once (at the heartbeat, or per pull for a pull that
/// carries its subscription).
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionFilter {
    Tag(TagFilter),
    /// The expression's text, and its compiled form (shared by every pull).
    Sql(String, Arc<SqlFilter>),
    /// A heartbeat's subscription of an expression type this broker has no filter for: the
    /// heartbeat is taken, as Apache takes it, and the group's pulls are refused.
    Unsupported(String),
}

impl SubscriptionFilter {
    /// Compiles `expression` of `expression_type` (None: a tag expression).
    pub fn compile(
        expression_type: Option<&str>,
        expression: &str,
    ) -> Result<SubscriptionFilter, SqlError> {
        if is_tag_type(expression_type) {
            return Ok(SubscriptionFilter::Tag(TagFilter::parse(expression)));
        }
        match expression_type {
            Some(expression_type::SQL92) => Ok(SubscriptionFilter::Sql(
                expression.to_string(),
                Arc::new(SqlFilter::parse(expression)?),
            )),
            Some(other) => Err(SqlError(format!(
                "the expression type {other:?} is not supported (TAG or SQL92)"
            ))),
            None => unreachable!("a tag type"),
        }
    }

    /// As a heartbeat registers a subscription: an SQL92 expression that does not parse is
    /// refused; an unknown expression type is kept as `Unsupported` (Apache registers the
    /// consumer and fails its pulls).
    pub fn for_heartbeat(
        expression_type: Option<&str>,
        expression: &str,
    ) -> Result<SubscriptionFilter, SqlError> {
        match expression_type {
            Some(t) if !is_tag_type(Some(t)) && t != expression_type::SQL92 => {
                Ok(SubscriptionFilter::Unsupported(t.to_string()))
            }
            t => Self::compile(t, expression),
        }
    }

    pub fn is_sql(&self) -> bool {
        matches!(self, SubscriptionFilter::Sql(..))
    }

    /// The consume queue's check (tag codes); SQL passes everything on to `matches_record`.
    pub fn matches_code(&self, code: i64) -> bool {
        match self {
            SubscriptionFilter::Tag(t) => t.matches_code(code),
            SubscriptionFilter::Sql(..) => true,
            SubscriptionFilter::Unsupported(_) => false,
        }
    }

    /// The record's check: SQL over its properties; tags pass (checked by code).
    pub fn matches_record(&self, properties: &[u8]) -> bool {
        match self {
            SubscriptionFilter::Tag(_) => true,
            SubscriptionFilter::Sql(_, f) => f.matches(properties),
            SubscriptionFilter::Unsupported(_) => false,
        }
    }
}
