//! Starting real servers: a name server, a broker over an mmap store in a data directory.

use std::path::Path;

use rockfish_core::broker::{Broker, BrokerConfig, FlushDiskType};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_store::{Disk, MessageStore, MmapDisk, StoreConfig};

use crate::driver::{Durable, Server, ServerHandle};
use crate::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("bind {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("opening the store under {dir}: {error}")]
    Store { dir: String, error: String },
}

pub async fn start_namesrv(
    listen: &str,
    config: NameServerConfig,
) -> Result<ServerHandle<NameServer>, LaunchError> {
    let ns = NameServer::new(config, now_ms());
    let server = Server::bind(listen, ns)
        .await
        .map_err(|error| LaunchError::Bind {
            addr: listen.into(),
            error,
        })?;
    tracing::info!(addr = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(), "name server listening");
    Ok(server.spawn())
}

/// Opens (and recovers) the store under `data_dir`, then serves the broker on `listen`.
/// `config.broker_addr` is what the broker advertises; a port of 0 in `listen` is replaced
/// by the bound port.
pub async fn start_broker(
    listen: &str,
    mut config: BrokerConfig,
    store_config: StoreConfig,
    data_dir: &Path,
) -> Result<ServerHandle<Broker<MmapDisk>>, LaunchError> {
    let store_err = |error: String| LaunchError::Store {
        dir: data_dir.display().to_string(),
        error,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| LaunchError::Bind {
            addr: listen.into(),
            error,
        })?;
    let bound = listener.local_addr().map_err(|error| LaunchError::Bind {
        addr: listen.into(),
        error,
    })?;
    let any_port = config.broker_addr.ends_with(":0");
    if any_port {
        let ip = config.broker_addr.trim_end_matches(":0").to_string();
        config.broker_addr = format!("{ip}:{}", bound.port());
    }
    // A master serves its slaves on the HA port (haListenPort: the broker's port + 1 unless
    // set; any free port when the broker's was).
    // In controller mode any replica may be elected: each listens from the start.
    let ha_listener = if config.broker_role.is_master() || config.enable_controller_mode {
        let ha_port = if any_port && config.ha_addr.is_empty() {
            0
        } else {
            config
                .effective_ha_addr()
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(0)
        };
        let ha_listen = format!("{}:{ha_port}", bound.ip());
        let l = tokio::net::TcpListener::bind(&ha_listen)
            .await
            .map_err(|error| LaunchError::Bind {
                addr: format!("{ha_listen} (haListenPort)"),
                error,
            })?;
        let ha_bound = l.local_addr().map_err(|error| LaunchError::Bind {
            addr: ha_listen.clone(),
            error,
        })?;
        let ip = config
            .broker_addr
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h);
        config.ha_addr = format!("{ip}:{}", ha_bound.port());
        Some(l)
    } else {
        None
    };
    let mut disk = MmapDisk::open_root(data_dir).map_err(|e| store_err(e.to_string()))?;
    if let Some(max) = store_config.max_mapped_files {
        disk.set_max_mapped(max);
    }
    serve_broker(listener, ha_listener, config, store_config, disk)
        .map_err(|error| store_err(error.to_string()))
}

/// A store that could not be opened, or a broker that could not start on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Opens (and recovers) the store on `disk`, then serves the broker on `listener`: the part
/// of a broker start shared by real disks and the simulated one (the madsim tier).
pub fn serve_broker<D: Disk>(
    listener: tokio::net::TcpListener,
    ha_listener: Option<tokio::net::TcpListener>,
    config: BrokerConfig,
    store_config: StoreConfig,
    disk: D,
) -> Result<ServerHandle<Broker<D>>, StartError>
where
    Broker<D>: Durable + Send + 'static,
{
    let bound = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let mut store_config = store_config;
    // Prewriting the log's space ahead pays where every append waits for a sync.
    store_config.warm_mapped_file = store_config
        .warm_mapped_file
        .or(Some(config.flush_disk_type == FlushDiskType::Sync));
    let opened = now_ms();
    let (store, report) =
        MessageStore::open(disk, store_config, now_ms()).map_err(|e| StartError(e.to_string()))?;
    let recovery_ms = now_ms().saturating_sub(opened);
    if report.fresh {
        tracing::info!("store created (a new data directory, nothing to recover)");
    } else if report.truncated.is_some()
        || !report.file_repairs.is_empty()
        || !report.rebuilt_queues.is_empty()
    {
        tracing::warn!(?report, "recovery repaired the store");
    } else if report.checkpoint.is_none() && report.log_end == 0 {
        tracing::info!("new store created");
    } else {
        tracing::info!(
            clean = report.clean_shutdown,
            end = report.log_end,
            checkpoint = report.checkpoint,
            replayed_bytes = report.log_end.saturating_sub(report.scanned_from),
            redispatched = report.redispatched,
            "store recovered"
        );
    }
    let mut broker = Broker::new(config, store, now_ms()).map_err(|e| StartError(e.to_string()))?;
    broker.set_recovery_stats(
        recovery_ms,
        report.log_end.saturating_sub(report.scanned_from),
        report.redispatched,
    );
    let role = broker.role().name();
    let mut server = Server::from_listener(listener, broker);
    if let Some(ha) = ha_listener {
        let ha_addr = ha.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %ha_addr, "HA port listening");
        server = server.with_stream_listener(ha);
    }
    tracing::info!(addr = %bound, role, "broker listening");
    Ok(server.spawn())
}
