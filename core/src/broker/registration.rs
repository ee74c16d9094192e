//! Registration with the name servers: every topic on each REGISTER_BROKER, at start, every
//! register interval, and soon after topics are created (coalesced).

use rockfish_store::Disk;

use super::timers::Timer;
use super::{Broker, REGISTER_RETRY_MS, TOPICS_PERSIST_DELAY_MS};
use crate::machine::Output;
use crate::remoting::RemotingCommand;
use crate::remoting::codes::request;

impl<D: Disk> Broker<D> {
    pub(super) fn register_all(&mut self, now: u64) {
        self.timers
            .set(Timer::Register, now + self.config.register_interval_ms);
        self.registrations_unanswered.clear();
        self.timers
            .set(Timer::RegisterRetry, now + REGISTER_RETRY_MS);
        let mut table = self.topics.table();
        // A broker that is not both readable and writable says so in every route (Apache
        // masks each topic's perm with brokerPermission).
        let rw = crate::protocol::perm::READ | crate::protocol::perm::WRITE;
        if self.config.broker_permission & rw != rw {
            for t in table.topic_config_table.values_mut() {
                t.perm &= self.config.broker_permission;
            }
        }
        let body = crate::protocol::RegisterBrokerBody {
            topic_config_serialize_wrapper: crate::protocol::TopicConfigSerializeWrapper {
                topic_config_table: table.topic_config_table,
                data_version: table.data_version,
            },
            filter_server_list: Vec::new(),
        };
        let body = crate::protocol::to_body(&body);
        let ha_addr = if self.repl.role.is_master() {
            self.config.effective_ha_addr()
        } else {
            String::new()
        };
        // Controller mode: routes list the group's master as brokerId 0, whichever replica
        // it is.
        let broker_id = if self.ctl.enabled && self.repl.role.is_master() {
            crate::protocol::MASTER_ID
        } else {
            self.config.broker_id
        };
        for addr in self.config.namesrv_addrs.clone() {
            let opaque = self.next_opaque();
            self.registrations_unanswered.insert(opaque);
            let cmd = RemotingCommand::request(request::REGISTER_BROKER, opaque)
                .with_ext("brokerAddr", &self.config.broker_addr)
                .with_ext("brokerName", &self.config.broker_name)
                .with_ext("brokerId", broker_id)
                .with_ext("clusterName", &self.config.cluster_name)
                .with_ext("haServerAddr", &ha_addr)
                .with_ext("compressed", false)
                .with_ext("bodyCrc32", crc32fast::hash(&body) as i32)
                .with_body(body.clone());
            self.outputs.push_back(Output::SendTo { addr, cmd });
        }
    }

    /// Topics were auto-created (by a send or a heartbeat): persisted and registered at once
    /// when none were for `TOPICS_PERSIST_DELAY_MS` (a client that creates one topic finds
    /// its route right away), else at the end of that interval together with every other
    /// topic created meanwhile, so that creating thousands of topics costs a few writes and
    /// registrations, not one write and one full re-registration each.
    pub(super) fn topics_created(&mut self, now: u64) {
        self.topics.bump_version(now);
        if self.timers.is_set(Timer::TopicsPersist) {
            return;
        }
        let quiet_from = self
            .persists
            .topics_persisted_at
            .map_or(now, |t| t + TOPICS_PERSIST_DELAY_MS);
        if now >= quiet_from {
            self.persist_topics(now);
        } else {
            self.timers.set(Timer::TopicsPersist, quiet_from);
        }
    }

    pub(super) fn persist_topics(&mut self, now: u64) {
        self.timers.clear(Timer::TopicsPersist);
        self.persists.topics_persisted_at = Some(now);
        self.topics.bump_version(now);
        self.persists.topics_dirty = true;
        self.write_topics();
        self.register_all(now);
    }
}
