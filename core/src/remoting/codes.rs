//! Request and response codes, as Apache RocketMQ numbers them
//! (`remoting/.../RequestCode.java`, `ResponseCode.java`).

/// Declares the codes as constants and a table of their Java names (metrics labels, logs).
macro_rules! codes {
    ($($(#[$m:meta])* $name:ident = $v:expr;)*) => {
        $($(#[$m])* pub const $name: i32 = $v;)*
        /// Every code with its Java field name.
        pub const NAMES: &[(i32, &str)] = &[$(($v, stringify!($name))),*];
        /// The Java field name of `code`, if it is one rockfish knows.
        pub fn name(code: i32) -> Option<&'static str> {
            NAMES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
        }
    };
}

/// Request codes.
pub mod request {
    codes! {
        SEND_MESSAGE = 10;
        PULL_MESSAGE = 11;
        QUERY_MESSAGE = 12;
        QUERY_BROKER_OFFSET = 13;
        QUERY_CONSUMER_OFFSET = 14;
        UPDATE_CONSUMER_OFFSET = 15;
        UPDATE_AND_CREATE_TOPIC = 17;
        GET_ALL_TOPIC_CONFIG = 21;
        GET_TOPIC_CONFIG_LIST = 22;
        GET_TOPIC_NAME_LIST = 23;
        UPDATE_BROKER_CONFIG = 25;
        GET_BROKER_CONFIG = 26;
        GET_BROKER_RUNTIME_INFO = 28;
        SEARCH_OFFSET_BY_TIMESTAMP = 29;
        GET_MAX_OFFSET = 30;
        GET_MIN_OFFSET = 31;
        GET_EARLIEST_MSG_STORETIME = 32;
        VIEW_MESSAGE_BY_ID = 33;
        HEART_BEAT = 34;
        UNREGISTER_CLIENT = 35;
        CONSUMER_SEND_MSG_BACK = 36;
        END_TRANSACTION = 37;
        GET_CONSUMER_LIST_BY_GROUP = 38;
        CHECK_TRANSACTION_STATE = 39;
        NOTIFY_CONSUMER_IDS_CHANGED = 40;
        LOCK_BATCH_MQ = 41;
        UNLOCK_BATCH_MQ = 42;
        GET_ALL_CONSUMER_OFFSET = 43;
        GET_ALL_DELAY_OFFSET = 45;
        CHECK_CLIENT_CONFIG = 46;
        PUT_KV_CONFIG = 100;
        GET_KV_CONFIG = 101;
        DELETE_KV_CONFIG = 102;
        REGISTER_BROKER = 103;
        UNREGISTER_BROKER = 104;
        GET_ROUTEINFO_BY_TOPIC = 105;
        GET_BROKER_CLUSTER_INFO = 106;
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200;
        GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201;
        GET_TOPIC_STATS_INFO = 202;
        GET_CONSUMER_CONNECTION_LIST = 203;
        GET_PRODUCER_CONNECTION_LIST = 204;
        WIPE_WRITE_PERM_OF_BROKER = 205;
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206;
        DELETE_SUBSCRIPTIONGROUP = 207;
        GET_CONSUME_STATS = 208;
        DELETE_TOPIC_IN_BROKER = 215;
        DELETE_TOPIC_IN_NAMESRV = 216;
        GET_TOPICS_BY_CLUSTER = 224;
        RESET_CONSUMER_CLIENT_OFFSET = 220;
        INVOKE_BROKER_TO_RESET_OFFSET = 222;
        CLONE_GROUP_OFFSET = 314;
        QUERY_TOPIC_CONSUME_BY_WHO = 300;
        GET_SYSTEM_TOPIC_LIST_FROM_NS = 304;
        SEND_MESSAGE_V2 = 310;
        SEND_BATCH_MESSAGE = 320;
        QUERY_DATA_VERSION = 322;
        /// RocketMQ 5: one group's config (header `group`), as its proxy asks.
        GET_SUBSCRIPTIONGROUP_CONFIG = 352;
        /// RocketMQ 5's pop consumption.
        POP_MESSAGE = 200050;
        ACK_MESSAGE = 200051;
        CHANGE_MESSAGE_INVISIBLETIME = 200053;
        BATCH_ACK_MESSAGE = 200151;
        /// RocketMQ 5 controller mode (Apache's codes).
        BROKER_HEARTBEAT = 904;
        CONTROLLER_ALTER_SYNC_STATE_SET = 1001;
        CONTROLLER_ELECT_MASTER = 1002;
        CONTROLLER_REGISTER_BROKER = 1003;
        CONTROLLER_GET_REPLICA_INFO = 1004;
        GET_BROKER_EPOCH_CACHE = 1007;
        /// rockfish's own: a raft message between controllers (oneway; Apache's controllers
        /// speak DLedger or JRaft on a port of their own).
        CONTROLLER_RAFT_MESSAGE = 1050;
    }
}

/// Response codes.
pub mod response {
    codes! {
        SUCCESS = 0;
        SYSTEM_ERROR = 1;
        SYSTEM_BUSY = 2;
        REQUEST_CODE_NOT_SUPPORTED = 3;
        TRANSACTION_FAILED = 4;
        /// Stored, with a warning: the flush did not finish in time.
        FLUSH_DISK_TIMEOUT = 10;
        /// Stored, with a warning: no slave to replicate to.
        SLAVE_NOT_AVAILABLE = 11;
        /// Stored, with a warning: the slave did not acknowledge in time.
        FLUSH_SLAVE_TIMEOUT = 12;
        MESSAGE_ILLEGAL = 13;
        SERVICE_NOT_AVAILABLE = 14;
        VERSION_NOT_SUPPORTED = 15;
        NO_PERMISSION = 16;
        TOPIC_NOT_EXIST = 17;
        TOPIC_EXIST_ALREADY = 18;
        PULL_NOT_FOUND = 19;
        PULL_RETRY_IMMEDIATELY = 20;
        PULL_OFFSET_MOVED = 21;
        QUERY_NOT_FOUND = 22;
        SUBSCRIPTION_PARSE_FAILED = 23;
        SUBSCRIPTION_NOT_EXIST = 24;
        SUBSCRIPTION_NOT_LATEST = 25;
        SUBSCRIPTION_GROUP_NOT_EXIST = 26;
        INVALID_PARAMETER = 29;
        TRANSACTION_SHOULD_COMMIT = 200;
        TRANSACTION_SHOULD_ROLLBACK = 201;
        TRANSACTION_STATE_UNKNOW = 202;
        CONSUMER_NOT_ONLINE = 206;
        /// Pop: nothing acked under the receipt (decided already).
        NO_MESSAGE = 208;
        POLLING_FULL = 209;
        POLLING_TIMEOUT = 210;
        CONTROLLER_FENCED_MASTER_EPOCH = 2000;
        CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH = 2001;
        CONTROLLER_INVALID_MASTER = 2002;
        CONTROLLER_INVALID_REPLICAS = 2003;
        CONTROLLER_MASTER_NOT_AVAILABLE = 2004;
        CONTROLLER_INVALID_REQUEST = 2005;
        CONTROLLER_BROKER_NOT_ALIVE = 2006;
        CONTROLLER_NOT_LEADER = 2007;
        CONTROLLER_BROKER_METADATA_NOT_EXIST = 2008;
        CONTROLLER_ELECT_MASTER_FAILED = 2012;
    }
}
