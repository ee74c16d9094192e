//! Subscription groups (RocketMQ's SubscriptionGroupManager): each consumer group's
//! configuration — whether it may consume, its retry queues, how many times a failing
//! message is retried before it goes to the dead-letter queue — persisted as
//! subscriptionGroup.json. Groups are created on first use (heartbeat, pull, send-back) when
//! `auto_create_subscription_group` allows, as Apache's default does, and by
//! UPDATE_AND_CREATE_SUBSCRIPTIONGROUP.

use rockfish_store::config::{self, SubscriptionGroupConfig, SubscriptionGroupTable};
use rockfish_store::{Disk, MessageStore, StoreResult};

use super::Broker;
use super::persist::PersistKind;
use crate::protocol::{request_body, to_body};
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

/// The most retries a group may ask for (Apache's admin tools cap retryMaxTimes the same way
/// only by convention; beyond this a failing message would cycle for weeks).
pub const MAX_RETRY_TIMES: i32 = 64;
/// The most retry queues a group may have (a topic's queue cap).
pub const MAX_RETRY_QUEUES: i32 = 1024;

#[derive(Debug, Default)]
pub(super) struct SubscriptionGroups {
    table: SubscriptionGroupTable,
    /// Changed since subscriptionGroup.json was last written.
    dirty: bool,
}

impl SubscriptionGroups {
    pub(super) fn load<D: Disk>(store: &MessageStore<D>) -> StoreResult<SubscriptionGroups> {
        let table: SubscriptionGroupTable =
            config::load(store.disk(), config::SUBSCRIPTION_GROUPS_FILE)?.unwrap_or_default();
        Ok(SubscriptionGroups {
            table,
            dirty: false,
        })
    }

    /// A slave takes its master's table.
    pub(super) fn follow(&mut self, master: SubscriptionGroupTable) {
        if master != self.table {
            self.table = master;
            self.dirty = true;
        }
    }

    pub(super) fn get(&self, group: &str) -> Option<&SubscriptionGroupConfig> {
        self.table.subscription_group_table.get(group)
    }

    pub(super) fn table(&self) -> &SubscriptionGroupTable {
        &self.table
    }

    fn put(&mut self, cfg: SubscriptionGroupConfig, now: u64) {
        self.table
            .subscription_group_table
            .insert(cfg.group_name.clone(), cfg);
        self.changed(now);
    }

    fn changed(&mut self, now: u64) {
        self.table.data_version.timestamp = rockfish_store::java_millis(now);
        self.table.data_version.counter += 1;
        self.dirty = true;
    }
}

/// Checks what an operator asks of a group: the name, and numbers within sense.
fn validate(cfg: &SubscriptionGroupConfig) -> Result<(), String> {
    super::validate_group(&cfg.group_name)?;
    if !(0..=MAX_RETRY_TIMES).contains(&cfg.retry_max_times) {
        return Err(format!(
            "retryMaxTimes={}: must be within 0..={MAX_RETRY_TIMES}",
            cfg.retry_max_times
        ));
    }
    if !(0..=MAX_RETRY_QUEUES).contains(&cfg.retry_queue_nums) {
        return Err(format!(
            "retryQueueNums={}: must be within 0..={MAX_RETRY_QUEUES}",
            cfg.retry_queue_nums
        ));
    }
    Ok(())
}

impl<D: Disk> Broker<D> {
    /// A group's configuration, created with the defaults if it is new and auto-creation is on
    /// (and the group cap allows). `None`: the group does not exist here.
    pub(super) fn find_group(&mut self, group: &str, now: u64) -> Option<&SubscriptionGroupConfig> {
        if self.groups.get(group).is_none() {
            if !self.config.auto_create_subscription_group || super::validate_group(group).is_err()
            {
                return None;
            }
            if self.groups.table.subscription_group_table.len() >= self.config.limits.max_groups {
                tracing::warn!(
                    group,
                    limit = self.config.limits.max_groups,
                    "subscription group not created: the broker holds its limit of groups"
                );
                return None;
            }
            tracing::info!(group, "auto-created subscription group");
            self.groups.put(SubscriptionGroupConfig::new(group), now);
        }
        self.groups.get(group)
    }

    /// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: the body is the group's configuration.
    pub(super) fn update_subscription_group(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let cfg: SubscriptionGroupConfig = request_body(cmd, "SubscriptionGroupConfig JSON")?;
        let refuse = |remark: String| {
            Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(remark),
            ))
        };
        if let Err(e) = validate(&cfg) {
            return refuse(e);
        }
        let known = self.groups.get(&cfg.group_name).is_some();
        if !known
            && self.groups.table.subscription_group_table.len() >= self.config.limits.max_groups
        {
            return refuse(format!(
                "subscription group {} not created: the broker holds {} groups (limit)",
                cfg.group_name, self.config.limits.max_groups
            ));
        }
        tracing::info!(group = %cfg.group_name, ?cfg, "subscription group updated");
        self.groups.put(cfg, now);
        self.write_groups();
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    /// GET_ALL_SUBSCRIPTIONGROUP_CONFIG: subscriptionGroup.json's content.
    pub(super) fn all_subscription_groups(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        Ok(Self::body_response(cmd, to_body(self.groups.table())))
    }

    /// GET_SUBSCRIPTIONGROUP_CONFIG: one group's configuration; a group not here is
    /// SUBSCRIPTION_GROUP_NOT_EXIST (never created by asking, as in Apache).
    pub(super) fn subscription_group(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("group")?;
        Ok(match self.groups.get(&group) {
            Some(cfg) => Self::body_response(cmd, to_body(cfg)),
            None => RemotingCommand::response_to(
                cmd,
                response::SUBSCRIPTION_GROUP_NOT_EXIST,
                Some(format!("subscription group {group} does not exist")),
            ),
        })
    }

    /// DELETE_SUBSCRIPTIONGROUP: header groupName, removeOffset.
    pub(super) fn delete_subscription_group(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("groupName")?;
        let remove_offset = cmd.ext_bool("removeOffset")?.unwrap_or(false);
        if self
            .groups
            .table
            .subscription_group_table
            .remove(&group)
            .is_some()
        {
            self.groups.changed(now);
            self.write_groups();
        }
        if remove_offset {
            let suffix = format!("@{group}");
            let before = self.offsets.table.offset_table.len();
            self.offsets
                .table
                .offset_table
                .retain(|key, _| !key.ends_with(&suffix));
            if self.offsets.table.offset_table.len() != before {
                self.offsets.dirty = true;
                self.persist_offsets(now);
            }
        }
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    /// Starts writing subscriptionGroup.json if it changed and no write of it is running.
    pub(super) fn write_groups(&mut self) {
        if !self.groups.dirty || self.persists.in_flight(PersistKind::Groups) {
            return;
        }
        match serde_json::to_vec_pretty(self.groups.table()) {
            Ok(data) => {
                self.groups.dirty = false;
                self.persist(PersistKind::Groups, config::SUBSCRIPTION_GROUPS_FILE, data);
            }
            Err(e) => tracing::error!(error = %e, "encoding subscription groups failed"),
        }
    }

    pub(super) fn groups_write_failed(&mut self) {
        self.groups.dirty = true;
    }

    pub(super) fn groups_at_shutdown(&self) -> SubscriptionGroupTable {
        self.groups.table().clone()
    }
}
