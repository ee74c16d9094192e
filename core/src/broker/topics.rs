//! The broker's topics, hashed: the send and pull paths look a topic up on every request, and
//! at 10,000 topics a sorted map's walk of string comparisons (each a cache miss) cost more
//! than the rest of the lookup. topics.json and registrations get a sorted snapshot
//! (`table`), as operators read it; both already copied the whole table.

use std::collections::HashMap;

use rockfish_store::FixedHasher;
use rockfish_store::config::{DataVersion, TopicConfig, TopicConfigTable};

#[derive(Debug, Default)]
pub(super) struct Topics {
    by_name: HashMap<String, TopicConfig, FixedHasher>,
    data_version: DataVersion,
}

impl Topics {
    pub fn new(table: TopicConfigTable) -> Topics {
        Topics {
            by_name: table.topic_config_table.into_iter().collect(),
            data_version: table.data_version,
        }
    }

    pub fn get(&self, name: &str) -> Option<&TopicConfig> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Adds or replaces a topic.
    pub fn insert(&mut self, name: String, config: TopicConfig) {
        self.by_name.insert(name, config);
    }

    pub fn remove(&mut self, name: &str) -> Option<TopicConfig> {
        self.by_name.remove(name)
    }

    /// The whole table, sorted by name, as topics.json and registrations carry it.
    pub fn table(&self) -> TopicConfigTable {
        TopicConfigTable {
            topic_config_table: self
                .by_name
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            data_version: self.data_version,
        }
    }

    pub fn data_version(&self) -> &DataVersion {
        &self.data_version
    }

    /// The table changed at `now` (name servers compare versions).
    pub fn bump_version(&mut self, now: u64) {
        self.data_version.timestamp = rockfish_store::java_millis(now);
        self.data_version.counter += 1;
    }
}
