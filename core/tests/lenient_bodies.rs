//! Every JSON body rockfish reads accepts what Apache's fastjson accepts: enums by name or
//! ordinal, numbers as strings and strings as numbers, booleans in their spellings, null and
//! absent fields as defaults, unknown fields, and bare (unquoted) numeric map keys. The
//! heartbeat bodies of rocketmq-client-cpp 2.x are the case that broke.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rockfish_core::broker::{Broker, BrokerConfig, ConsumerIdList, HeartbeatData};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::protocol::heartbeat::{ConsumeFromWhere, ConsumeType, MessageModel};
use rockfish_core::protocol::{
    LockBatchRequestBody, RegisterBrokerBody, TopicRouteData, decode_body,
};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

const C: ConnId = ConnId(2);

fn broker() -> Broker<MemDisk> {
    let (store, _) = MessageStore::open(MemDisk::new(1), StoreConfig::small(), 0).unwrap();
    let mut b = Broker::new(BrokerConfig::default(), store, 0).unwrap();
    b.on_connect(C, HostAddr::V4([10, 0, 0, 8], 6666), 0);
    while b.poll_output().is_some() {}
    b
}

fn call(b: &mut Broker<MemDisk>, cmd: RemotingCommand) -> RemotingCommand {
    let opaque = cmd.opaque;
    b.on_command(C, cmd, 0, 0);
    std::iter::from_fn(|| b.poll_output())
        .find_map(|o| match o {
            Output::Send { cmd, .. } if cmd.is_response() && cmd.opaque == opaque => Some(cmd),
            _ => None,
        })
        .expect("a response")
}

/// HEART_BEAT bodies as rocketmq-client-cpp 2.x writes them (jsoncpp's FastWriter: keys
/// sorted, enums as ordinals, subVersion a string, the sets and filter mode left out), and
/// the shapes of other fastjson-fed SDKs.
const CPP_HEARTBEATS: &[(&str, &str, bool)] = &[
    (
        "rocketmq-client-cpp 2.x push consumer, clustering",
        r#"{"clientID":"127.0.0.1@18311#1234567#1","consumerDataSet":[{"consumeFromWhere":4,"consumeType":1,"groupName":"GID_cpp","messageModel":1,"subscriptionDataSet":[{"subString":"*","subVersion":"1764600000000","topic":"TopicCpp"}]}]}"#,
        false,
    ),
    (
        "rocketmq-client-cpp 2.x, broadcasting, producer set null",
        r#"{"clientID":"127.0.0.1@18311#1234567#2","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,"groupName":"GID_cpp","messageModel":0,"subscriptionDataSet":[{"subString":"TagA || TagB","subVersion":"1764600000001","topic":"TopicCpp"}]}],"producerDataSet":null}"#,
        true,
    ),
    (
        "names as strings, numbers as strings, booleans as strings, unknown fields",
        r#"{"clientID":"c3","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"GID_cpp","messageModel":"CLUSTERING","unitMode":"false","heartbeatFingerprint":12,"subscriptionDataSet":[{"classFilterMode":"0","codeSet":["2598919"],"subString":"TagA","subVersion":1764600000002,"tagsSet":["TagA"],"topic":"TopicCpp","expressionType":null}]}],"producerDataSet":[{"groupName":"PG"}],"withoutSub":false}"#,
        false,
    ),
];

#[test]
fn cpp_sdk_heartbeats_register_their_consumers() {
    for (name, body, broadcasting) in CPP_HEARTBEATS {
        let mut b = broker();
        let resp = call(
            &mut b,
            RemotingCommand::request(request::HEART_BEAT, 1).with_body(body.as_bytes().to_vec()),
        );
        assert_eq!(resp.code, response::SUCCESS, "{name}: {:?}", resp.remark);
        let list = call(
            &mut b,
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP, 2)
                .with_ext("consumerGroup", "GID_cpp"),
        );
        assert_eq!(list.code, response::SUCCESS, "{name}: {:?}", list.remark);
        let ids: ConsumerIdList = decode_body(&list.body).unwrap();
        assert_eq!(ids.consumer_id_list.len(), 1, "{name}");
        assert_eq!(
            b.topic("%RETRY%GID_cpp").is_some(),
            !broadcasting,
            "{name}: clustering consumers get their retry topic"
        );
    }
}

#[test]
fn cpp_heartbeat_fields_read_as_java_reads_them() {
    let data: HeartbeatData = decode_body(CPP_HEARTBEATS[0].1.as_bytes()).unwrap();
    let c = &data.consumer_data_set[0];
    assert_eq!(c.consume_type, Some(ConsumeType::ConsumePassively));
    assert_eq!(c.message_model, Some(MessageModel::Clustering));
    assert_eq!(
        c.consume_from_where,
        Some(ConsumeFromWhere::ConsumeFromFirstOffset)
    );
    assert_eq!(c.subscription_data_set[0].sub_version, 1_764_600_000_000);
    assert!(c.subscription_data_set[0].tags_set.is_empty());
    assert!(data.producer_data_set.is_empty());
    let data: HeartbeatData = decode_body(CPP_HEARTBEATS[2].1.as_bytes()).unwrap();
    let s = &data.consumer_data_set[0].subscription_data_set[0];
    assert_eq!(s.code_set.iter().copied().collect::<Vec<_>>(), [2_598_919]);
    assert!(!s.class_filter_mode);
    assert_eq!(data.producer_data_set[0].group_name, "PG");
}

#[test]
fn every_enum_ordinal_is_javas() {
    let cases: &[(&str, i64)] = &[
        ("CONSUME_FROM_LAST_OFFSET", 0),
        ("CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST", 1),
        ("CONSUME_FROM_MIN_OFFSET", 2),
        ("CONSUME_FROM_MAX_OFFSET", 3),
        ("CONSUME_FROM_FIRST_OFFSET", 4),
        ("CONSUME_FROM_TIMESTAMP", 5),
    ];
    for (name, ordinal) in cases {
        let by_name: ConsumeFromWhere = decode_body(format!("\"{name}\"").as_bytes()).unwrap();
        let by_ordinal: ConsumeFromWhere = decode_body(ordinal.to_string().as_bytes()).unwrap();
        assert_eq!(by_name, by_ordinal, "{name}");
    }
    for (name, ordinal) in [
        ("CONSUME_ACTIVELY", 0),
        ("CONSUME_PASSIVELY", 1),
        ("CONSUME_POP", 2),
    ] {
        let a: ConsumeType = decode_body(format!("\"{name}\"").as_bytes()).unwrap();
        let b: ConsumeType = decode_body(ordinal.to_string().as_bytes()).unwrap();
        assert_eq!(a, b, "{name}");
    }
    for (name, ordinal) in [("BROADCASTING", 0), ("CLUSTERING", 1)] {
        let a: MessageModel = decode_body(format!("\"{name}\"").as_bytes()).unwrap();
        let b: MessageModel = decode_body(ordinal.to_string().as_bytes()).unwrap();
        assert_eq!(a, b, "{name}");
    }
    assert!(
        decode_body::<MessageModel>(b"2").is_err(),
        "no such ordinal"
    );
    assert!(
        decode_body::<MessageModel>(b"\"CLUSTER\"").is_err(),
        "no such name"
    );
}

/// Routes as Apache's name server sends them to clients older than V4_9_4: fastjson's bare
/// numeric keys (not JSON), and as it sends them to newer ones.
#[test]
fn routes_parse_with_bare_or_quoted_broker_ids() {
    let bare = br#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;
    let quoted = br#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911","1":"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;
    let spaced = b"{ \"brokerDatas\" : [ { \"brokerAddrs\" : { 0 : \"127.0.0.1:10911\" ,\n 1:\"127.0.0.1:10921\"}, \"brokerName\":\"broker-a\",\"cluster\":\"DefaultCluster\"}], \"queueDatas\":[{\"brokerName\":\"broker-a\",\"perm\":\"6\",\"readQueueNums\":4,\"writeQueueNums\":4}]}";
    for body in [&bare[..], &quoted[..], &spaced[..]] {
        let r: TopicRouteData = decode_body(body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(body));
        });
        assert_eq!(r.broker_datas[0].master_addr(), Some("127.0.0.1:10911"));
        assert_eq!(
            r.broker_datas[0].broker_addrs.get(&1).map(String::as_str),
            Some("127.0.0.1:10921")
        );
        assert_eq!(r.queue_datas[0].perm, 6);
        assert_eq!(r.queue_datas[0].write_queue_nums, 4);
    }
    // Strings that look like keys inside values are left alone.
    let tricky = br#"{"orderTopicConf":"{0:\"x\"}, 1:","brokerDatas":[],"queueDatas":[]}"#;
    let r: TopicRouteData = decode_body(tricky).unwrap();
    assert_eq!(r.order_topic_conf.as_deref(), Some("{0:\"x\"}, 1:"));
}

#[test]
fn lock_and_registration_bodies_are_lenient_too() {
    let lock: LockBatchRequestBody = decode_body(
        br#"{"clientId":"c","consumerGroup":"g","onlyThisBroker":"true","mqSet":[{"brokerName":"b","queueId":"3","topic":"T"}]}"#,
    )
    .unwrap();
    assert!(lock.only_this_broker);
    assert_eq!(lock.mq_set.iter().next().unwrap().queue_id, 3);
    let reg: RegisterBrokerBody = decode_body(
        br#"{"topicConfigSerializeWrapper":{"dataVersion":{"counter":"5","timestamp":1700000000000,"stateVersion":0},"topicConfigTable":{"T":{"order":false,"perm":6,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"T","topicSysFlag":0,"writeQueueNums":"8","attributes":{}}}},"filterServerList":null}"#,
    )
    .unwrap();
    let t = &reg.topic_config_serialize_wrapper.topic_config_table["T"];
    assert_eq!((t.read_queue_nums, t.write_queue_nums), (8, 8));
    assert_eq!(reg.topic_config_serialize_wrapper.data_version.counter, 5);
    assert!(reg.filter_server_list.is_empty());
}

#[derive(Debug, Clone, Copy)]
enum NumberForm {
    Plain,
    Quoted,
    QuotedSpaced,
}

fn number(n: i64, form: NumberForm) -> String {
    match form {
        NumberForm::Plain => n.to_string(),
        NumberForm::Quoted => format!("\"{n}\""),
        NumberForm::QuotedSpaced => format!("\" {n} \""),
    }
}

fn boolean(b: bool, form: u8) -> String {
    match (form % 5, b) {
        (0, _) => b.to_string(),
        (1, _) => format!("\"{b}\""),
        (2, _) => format!("\"{}\"", b.to_string().to_uppercase()),
        (3, _) => u8::from(b).to_string(),
        (_, _) => format!("\"{}\"", u8::from(b)),
    }
}

fn number_form() -> impl Strategy<Value = NumberForm> {
    prop_oneof![
        Just(NumberForm::Plain),
        Just(NumberForm::Quoted),
        Just(NumberForm::QuotedSpaced)
    ]
}

proptest! {
    /// Each field of a heartbeat in any lenient form reads as the same value.
    #[test]
    fn heartbeat_fields_in_any_form(
        model in 0usize..2, from in 0usize..6, ctype in 0usize..3,
        by_ordinal: [bool; 3],
        sub_version in 0i64..i64::MAX, version_form in number_form(),
        unit_mode: bool, unit_form in 0u8..5,
        class_filter: bool, class_form in 0u8..5,
        code in -1_000_000i64..1_000_000, code_form in number_form(),
        omit_sets: bool, null_producers: bool,
        extra in "[a-z]{1,8}",
    ) {
        let models = ["BROADCASTING", "CLUSTERING"];
        let froms = ["CONSUME_FROM_LAST_OFFSET", "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
            "CONSUME_FROM_MIN_OFFSET", "CONSUME_FROM_MAX_OFFSET", "CONSUME_FROM_FIRST_OFFSET", "CONSUME_FROM_TIMESTAMP"];
        let types = ["CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP"];
        let e = |names: &[&str], i: usize, ordinal: bool| if ordinal { i.to_string() } else { format!("\"{}\"", names[i]) };
        let sets = if omit_sets { String::new() } else {
            format!(r#""tagsSet":["TagA"],"codeSet":[{}],"#, number(code, code_form))
        };
        let body = format!(
            r#"{{"clientID":"c","{extra}":[1,{{"x":null}}],"producerDataSet":{},"consumerDataSet":[{{"groupName":"G","messageModel":{},"consumeFromWhere":{},"consumeType":{},"unitMode":{},"subscriptionDataSet":[{{"topic":"T","subString":"TagA",{}"subVersion":{},"classFilterMode":{}}}]}}]}}"#,
            if null_producers { "null" } else { "[]" },
            e(&models, model, by_ordinal[0]), e(&froms, from, by_ordinal[1]), e(&types, ctype, by_ordinal[2]),
            boolean(unit_mode, unit_form), sets, number(sub_version, version_form), boolean(class_filter, class_form),
        );
        let data: HeartbeatData = decode_body(body.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        let c = &data.consumer_data_set[0];
        let strict: HeartbeatData = serde_json::from_value(serde_json::json!({
            "clientID": "c",
            "consumerDataSet": [{"groupName": "G", "messageModel": models[model], "consumeFromWhere": froms[from],
                "consumeType": types[ctype], "unitMode": unit_mode,
                "subscriptionDataSet": [{"topic": "T", "subString": "TagA",
                    "tagsSet": if omit_sets { vec![] } else { vec!["TagA"] },
                    "codeSet": if omit_sets { vec![] } else { vec![code] },
                    "subVersion": sub_version, "classFilterMode": class_filter}]}]
        })).unwrap();
        prop_assert_eq!(&data, &strict);
        prop_assert_eq!(c.is_broadcasting(), model == 0);
    }

    /// Broker-id maps read the same with bare, quoted or spaced keys.
    #[test]
    fn broker_addrs_in_any_key_form(ids in proptest::collection::btree_set(0u64..1_000_000, 1..6), form in 0u8..3) {
        let addrs: BTreeMap<u64, String> = ids.iter().map(|i| (*i, format!("10.0.0.{}:10911", i % 250))).collect();
        let entries: Vec<String> = addrs.iter().map(|(k, v)| match form {
            0 => format!("{k}:\"{v}\""),
            1 => format!("\"{k}\":\"{v}\""),
            _ => format!("\n  {k} : \"{v}\" "),
        }).collect();
        let body = format!(r#"{{"queueDatas":[],"brokerDatas":[{{"cluster":"C","brokerName":"b","brokerAddrs":{{{}}}}}]}}"#, entries.join(","));
        let r: TopicRouteData = decode_body(body.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        prop_assert_eq!(&r.broker_datas[0].broker_addrs, &addrs);
    }

    /// Nothing panics, whatever the body.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_body::<HeartbeatData>(&body);
        let _ = decode_body::<TopicRouteData>(&body);
    }
}
