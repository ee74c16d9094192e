//! The broker's topics: the table written as `config/topics.json` and sent with every
//! registration (sorted, as operators read it), and a hashed index of it that the send and
//! pull paths look up. At 10,000 topics a lookup in the sorted table is a walk of string
//! comparisons, each a cache miss; the index is one probe.

use std::collections::HashMap;

use rockfish_store::FixedHasher;
use rockfish_store::config::{DataVersion, TopicConfig, TopicConfigTable};

#[derive(Debug, Default)]
pub(super) struct Topics {
    table: TopicConfigTable,
    /// The same entries as `table`, hashed.
    index: HashMap<String, TopicConfig, FixedHasher>,
}

impl Topics {
    pub fn new(table: TopicConfigTable) -> Topics {
        let index = table
            .topic_config_table
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let topics = Topics { table, index };
        topics.check();
        topics
    }

    pub fn get(&self, name: &str) -> Option<&TopicConfig> {
        self.index.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Adds or replaces a topic.
    pub fn insert(&mut self, name: String, config: TopicConfig) {
        self.index.insert(name.clone(), config.clone());
        self.table.topic_config_table.insert(name, config);
        self.check();
    }

    pub fn remove(&mut self, name: &str) -> Option<TopicConfig> {
        self.index.remove(name);
        let removed = self.table.topic_config_table.remove(name);
        self.check();
        removed
    }

    /// The whole table, as topics.json and registrations carry it.
    pub fn table(&self) -> &TopicConfigTable {
        &self.table
    }

    pub fn data_version(&self) -> DataVersion {
        self.table.data_version
    }

    /// The table changed at `now` (name servers compare versions).
    pub fn bump_version(&mut self, now: u64) {
        self.table.data_version.timestamp = now as i64;
        self.table.data_version.counter += 1;
    }

    fn check(&self) {
        debug_assert_eq!(self.index.len(), self.table.topic_config_table.len());
    }
}
