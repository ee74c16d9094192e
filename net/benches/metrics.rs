//! What metrics add to one send: the driver's rpc latency count (the request read, its answer
//! written) and the broker's traffic count per topic, next to the same loop without them.
//! The send path's own cost (decode, append, answer) is in core's and store's benches; these
//! numbers are what was added on top of it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rockfish_core::broker::stats::BrokerStats;
use rockfish_core::machine::ConnId;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::metrics::DriverStats;

fn send_path_counts(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_per_send");
    // 64 connections, 16 topics: the maps hold what a busy broker's would.
    let topics: Vec<String> = (0..16).map(|i| format!("Topic{i}")).collect();
    g.bench_function("driver_rpc_latency", |b| {
        let mut stats = DriverStats::default();
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            let conn = ConnId(n % 64);
            let opaque = n as i32;
            stats.request(conn, opaque, request::SEND_MESSAGE_V2, n);
            stats.answered(conn, opaque, response::SUCCESS, n + 1);
        });
        black_box(&stats);
    });
    g.bench_function("broker_traffic_per_topic", |b| {
        let mut stats = BrokerStats::new(0, 10_000);
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            let topic = &topics[(n % 16) as usize];
            stats.stored(black_box(topic), 1, 1_024, n / 1_000);
        });
        black_box(&stats);
    });
    g.bench_function("both", |b| {
        let mut driver = DriverStats::default();
        let mut broker = BrokerStats::new(0, 10_000);
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            let conn = ConnId(n % 64);
            driver.request(conn, n as i32, request::SEND_MESSAGE_V2, n);
            broker.stored(black_box(&topics[(n % 16) as usize]), 1, 1_024, n / 1_000);
            driver.answered(conn, n as i32, response::SUCCESS, n + 1);
        });
        black_box((&driver, &broker));
    });
    g.finish();
}

criterion_group!(benches, send_path_counts);
criterion_main!(benches);
