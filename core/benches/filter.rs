//! What a subscription's filter costs a pull, per message: 32 messages read from a store
//! (MemDisk) with no filter, a tag filter (consume queue tag codes), and SQL92 expressions
//! evaluated over each record's properties; and the evaluation alone.
//!
//! `cargo bench -p rockfish-core --bench filter`; numbers in issue 13's note.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfish_core::filter::SubscriptionFilter;
use rockfish_core::message::properties_string;
use rockfish_store::record::{HostAddr, StoreMessage};
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

const N: usize = 32;

fn store() -> MessageStore<MemDisk> {
    let (mut store, _) =
        MessageStore::open(MemDisk::new(1), StoreConfig::small(), 1_700_000_000_000).unwrap();
    let body = vec![b'x'; 1024];
    for i in 0..N {
        let price = (i * 10).to_string();
        let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
        let key = format!("order-{i}");
        let props = properties_string([
            ("UNIQ_KEY", key.as_str()),
            ("WAIT", "true"),
            ("TAGS", tag),
            ("KEYS", key.as_str()),
            ("price", price.as_str()),
            ("region", "eu-west-1"),
        ]);
        let host = HostAddr::V4([127, 0, 0, 1], 10911);
        let msg = StoreMessage {
            topic: "T",
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &body,
            properties: &props,
        };
        store.put(&msg, 1_700_000_000_000).unwrap();
    }
    store
}

fn pulls(c: &mut Criterion) {
    let store = store();
    let mut g = c.benchmark_group("pull_32");
    g.throughput(Throughput::Elements(N as u64));
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("unfiltered", None, "*"),
        ("tag", None, "TagA || TagB"),
        ("sql_simple", Some("SQL92"), "price >= 0"),
        (
            "sql_all_match",
            Some("SQL92"),
            "TAGS IN ('TagA', 'TagB') AND price BETWEEN 0 AND 1000 AND region <> 'us'",
        ),
        (
            "sql_half_match",
            Some("SQL92"),
            "TAGS = 'TagA' AND (price > 50 OR region IS NULL)",
        ),
    ];
    for (name, ty, expr) in cases {
        let f = SubscriptionFilter::compile(ty, expr).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let got = store
                    .get_filtered(
                        "T",
                        0,
                        0,
                        N,
                        usize::MAX,
                        &|code| f.matches_code(code),
                        &|props| f.matches_record(props),
                        u64::MAX,
                    )
                    .unwrap();
                black_box(got.messages.len())
            })
        });
    }
    g.finish();
}

fn evaluation(c: &mut Criterion) {
    let props = properties_string([
        ("UNIQ_KEY", "7F0000010001"),
        ("WAIT", "true"),
        ("TAGS", "TagA"),
        ("KEYS", "order-1"),
        ("price", "120"),
        ("region", "eu-west-1"),
    ]);
    let f = SubscriptionFilter::compile(
        Some("SQL92"),
        "TAGS IN ('TagA', 'TagB') AND price BETWEEN 0 AND 1000 AND region <> 'us'",
    )
    .unwrap();
    c.bench_function("sql_evaluate_one", |b| {
        b.iter(|| black_box(f.matches_record(black_box(&props))))
    });
}

criterion_group!(benches, pulls, evaluation);
criterion_main!(benches);
