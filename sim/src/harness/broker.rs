//! One broker on a `MemDisk`, driven request by request: the harness of the broker's
//! machine tests. Config and checkpoint writes (`Persist`) are carried out at once; flushes
//! are answered when the test says so (`run_flushes`), in the order asked, as the machine
//! contract requires.

use std::collections::VecDeque;

use bytes::Bytes;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::properties_string;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::request;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

pub struct BrokerHarness {
    pub b: Broker<MemDisk>,
    pub disk: MemDisk,
    /// The time every input is given.
    pub now: u64,
    opaque: i32,
    /// Flushes the broker asked for that the test has not answered yet.
    flushes: VecDeque<u64>,
}

impl BrokerHarness {
    /// Recovers a store from `disk` and starts a broker on it at `now`.
    pub fn start(config: BrokerConfig, store: StoreConfig, disk: MemDisk, now: u64) -> Self {
        let (store, _) = MessageStore::open(disk.clone(), store, now).expect("the store opens");
        let b = Broker::new(config, store, now).expect("the broker starts");
        let mut h = BrokerHarness {
            b,
            disk,
            now,
            opaque: 0,
            flushes: VecDeque::new(),
        };
        h.drain();
        h
    }

    /// Opens connection `conn` from a client at `host`.
    pub fn connect(&mut self, conn: ConnId, host: HostAddr) {
        self.b.on_connect(conn, host, self.now);
    }

    /// Everything the broker output but its config and checkpoint writes, which are run at
    /// once; flushes are remembered for `run_flushes`.
    pub fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.b.poll_output() {
            match o {
                Output::Persist { token, files } => self.b.run_persist(token, files, self.now),
                o => {
                    if let Output::Flush { upto } = &o {
                        self.flushes.push_back(*upto);
                    }
                    out.push(o)
                }
            }
        }
        out
    }

    /// Answers the flushes `drain` has seen, in order; returns what that output. A test that
    /// answers flushes itself (`b.run_flush`) must not also call this: a flush is answered
    /// once.
    pub fn run_flushes(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(upto) = self.flushes.pop_front() {
            self.b.run_flush(upto, self.now);
            out.extend(self.drain());
        }
        out
    }

    /// Every record the store holds in (`topic`, `queue`), read page by page (a read stops at
    /// 16,000 entries).
    pub fn records(&self, topic: &str, queue: u32) -> Vec<rockfish_store::StoredRecord> {
        let (store, mut all) = (self.b.store(), Vec::new());
        let mut at = store.min_offset(topic, queue);
        while at < store.max_offset(topic, queue) {
            let got = store
                .get(topic, queue, at, 10_000, usize::MAX, &|_| true)
                .expect("the test store reads");
            if got.next_offset <= at {
                break;
            }
            all.extend(got.messages);
            at = got.next_offset;
        }
        all
    }

    /// A request with the next opaque.
    pub fn req(&mut self, code: i32) -> RemotingCommand {
        self.opaque += 1;
        RemotingCommand::request(code, self.opaque)
    }

    /// A SEND_MESSAGE_V2 as the Java client writes it (single-letter header keys), to
    /// `topic`'s queue `queue`, with the message's properties.
    pub fn send_v2(
        &mut self,
        topic: &str,
        queue: i32,
        props: &[(&str, &str)],
        body: &[u8],
    ) -> RemotingCommand {
        let props = String::from_utf8(properties_string(props.iter().copied()))
            .expect("test properties are UTF-8");
        self.req(request::SEND_MESSAGE_V2)
            .with_ext("a", "PG")
            .with_ext("b", topic)
            .with_ext("c", "TBW102")
            .with_ext("d", 4)
            .with_ext("e", queue)
            .with_ext("f", 0)
            .with_ext("g", 1_700_000_000_000i64)
            .with_ext("h", 0)
            .with_ext("i", props)
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_body(Bytes::copy_from_slice(body))
    }

    /// Hands `cmd` to the broker on `conn`; returns everything it output.
    pub fn call(&mut self, conn: ConnId, cmd: RemotingCommand) -> Vec<Output> {
        self.b.on_command(conn, cmd, self.now, self.now);
        self.drain()
    }

    /// The response to `opaque` on `conn` among `out`, with its records.
    pub fn response(
        out: &[Output],
        conn: ConnId,
        opaque: i32,
    ) -> Option<(RemotingCommand, Vec<Bytes>)> {
        out.iter().find_map(|o| match o {
            Output::Send { conn: c, cmd }
                if *c == conn && cmd.opaque == opaque && cmd.is_response() =>
            {
                Some((cmd.clone(), vec![]))
            }
            Output::SendRecords {
                conn: c,
                cmd,
                records,
            } if *c == conn && cmd.opaque == opaque => Some((cmd.clone(), records.clone())),
            _ => None,
        })
    }

    /// Calls and expects exactly one response on `conn`.
    pub fn one(&mut self, conn: ConnId, cmd: RemotingCommand) -> (RemotingCommand, Vec<Bytes>) {
        let opaque = cmd.opaque;
        let out = self.call(conn, cmd);
        let answers = out
            .iter()
            .filter(|o| match o {
                Output::Send { conn: c, cmd } => *c == conn && cmd.is_response(),
                Output::SendRecords { conn: c, .. } => *c == conn,
                _ => false,
            })
            .count();
        assert_eq!(answers, 1, "expected one response on {conn:?}");
        BrokerHarness::response(&out, conn, opaque).expect("the response answers the request")
    }
}

/// Declares a test file's own harness type over `BrokerHarness`: its request builders go in
/// `impl $name { .. }`, and the harness's fields and methods are reached through it.
#[macro_export]
macro_rules! broker_harness {
    ($name:ident) => {
        /// The broker harness, and this file's requests on it.
        struct $name($crate::harness::broker::BrokerHarness);

        impl std::ops::Deref for $name {
            type Target = $crate::harness::broker::BrokerHarness;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
    };
}
