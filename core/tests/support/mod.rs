//! Shared by the tests that read served records.

use rockfish_core::message::decoder::MESSAGE_MAGIC_CODE_V2;
use rockfish_store::record::{MESSAGE_MAGIC_CODE, SYSFLAG_BORNHOST_V6, SYSFLAG_STOREHOST_V6};

/// A record as Apache's CommitLog writes it (no `__CRC32#` unless `props` has it), built
/// field by field here so the test does not lean on the code under test.
pub struct Apache<'a> {
    pub v2: bool,
    pub sys_flag: i32,
    pub queue_offset: u64,
    pub born_v6: bool,
    pub store_v6: bool,
    pub topic: &'a str,
    pub body: &'a [u8],
    pub props: &'a [u8],
}

impl Apache<'_> {
    pub fn new<'a>(
        topic: &'a str,
        body: &'a [u8],
        props: &'a [u8],
        queue_offset: u64,
    ) -> Apache<'a> {
        Apache {
            v2: false,
            sys_flag: 0,
            queue_offset,
            born_v6: false,
            store_v6: false,
            topic,
            body,
            props,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut r = Vec::new();
        let mut sys_flag = self.sys_flag;
        if self.born_v6 {
            sys_flag |= SYSFLAG_BORNHOST_V6;
        }
        if self.store_v6 {
            sys_flag |= SYSFLAG_STOREHOST_V6;
        }
        let host = |r: &mut Vec<u8>, v6: bool, last: u8| {
            if v6 {
                let mut ip = [0u8; 16];
                ip[15] = last;
                r.extend_from_slice(&ip);
            } else {
                r.extend_from_slice(&[127, 0, 0, last]);
            }
            r.extend_from_slice(&10911i32.to_be_bytes());
        };
        r.extend_from_slice(&0u32.to_be_bytes()); // total, patched below
        r.extend_from_slice(
            &(if self.v2 {
                MESSAGE_MAGIC_CODE_V2
            } else {
                MESSAGE_MAGIC_CODE
            })
            .to_be_bytes(),
        );
        r.extend_from_slice(&(crc32fast::hash(self.body) & 0x7FFF_FFFF).to_be_bytes());
        r.extend_from_slice(&3u32.to_be_bytes()); // queue id
        r.extend_from_slice(&0i32.to_be_bytes()); // flag
        r.extend_from_slice(&self.queue_offset.to_be_bytes());
        r.extend_from_slice(&(4096 + self.queue_offset).to_be_bytes()); // physical offset
        r.extend_from_slice(&sys_flag.to_be_bytes());
        r.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        host(&mut r, self.born_v6, 1);
        r.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        host(&mut r, self.store_v6, 2);
        r.extend_from_slice(&2i32.to_be_bytes()); // reconsume times
        r.extend_from_slice(&0i64.to_be_bytes()); // prepared transaction offset
        r.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        r.extend_from_slice(self.body);
        if self.v2 {
            r.extend_from_slice(&(self.topic.len() as u16).to_be_bytes());
        } else {
            r.push(self.topic.len() as u8);
        }
        r.extend_from_slice(self.topic.as_bytes());
        r.extend_from_slice(&(self.props.len() as u16).to_be_bytes());
        r.extend_from_slice(self.props);
        let total = r.len() as u32;
        r[..4].copy_from_slice(&total.to_be_bytes());
        r
    }
}
