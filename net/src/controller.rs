//! A name server with RocketMQ 5's controller embedded (enableControllerInNamesrv), served on
//! real sockets: the controller's raft log lives in a data directory, written atomically by
//! the flush thread before any message that depends on it leaves (`Output::Persist`).

use std::path::Path;

use bytes::Bytes;
use rockfish_core::controller::{Controller, ControllerConfig, RAFT_LOG_FILE};
use rockfish_core::machine::{ConnId, Machine, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::remoting::RemotingCommand;
use rockfish_store::record::HostAddr;
use rockfish_store::{Disk, MmapDisk, OffTaskSync};

use crate::driver::{Durable, Server, ServerHandle};
use crate::flush::{FlushDone, FlushJob};
use crate::launch::LaunchError;
use crate::now_ms;

/// The name server machine with its controller, and the directory its raft log is kept in.
pub struct ControllerNamesrv {
    ns: NameServer,
    disk: MmapDisk,
}

impl ControllerNamesrv {
    /// Opens `data_dir` and the controller's raft log in it (none: a fresh controller).
    pub fn open(
        ns_config: NameServerConfig,
        config: ControllerConfig,
        data_dir: &Path,
        now: u64,
    ) -> Result<ControllerNamesrv, String> {
        let disk = MmapDisk::open_root(data_dir).map_err(|e| e.to_string())?;
        let persisted = disk.read_file(RAFT_LOG_FILE).map_err(|e| e.to_string())?;
        let controller = Controller::new(config, persisted.as_deref(), now)
            .map_err(|e| format!("{}/{RAFT_LOG_FILE}: {e}", data_dir.display()))?;
        Ok(ControllerNamesrv {
            ns: NameServer::with_controller(ns_config, controller, now),
            disk,
        })
    }

    pub fn name_server(&self) -> &NameServer {
        &self.ns
    }
}

impl Machine for ControllerNamesrv {
    fn on_connect(&mut self, conn: ConnId, peer: HostAddr, now: u64) {
        Machine::on_connect(&mut self.ns, conn, peer, now)
    }
    fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        Machine::on_disconnect(&mut self.ns, conn, now)
    }
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64) {
        Machine::on_command(&mut self.ns, conn, cmd, received_at, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Machine::on_timeout(&mut self.ns, now)
    }
    fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        Machine::on_persisted(&mut self.ns, token, result, now)
    }
    fn on_stream_accepted(&mut self, conn: ConnId, peer: HostAddr, now: u64) {
        Machine::on_stream_accepted(&mut self.ns, conn, peer, now)
    }
    fn on_stream_opened(&mut self, addr: &str, conn: ConnId, now: u64) {
        Machine::on_stream_opened(&mut self.ns, addr, conn, now)
    }
    fn on_stream_bytes(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        Machine::on_stream_bytes(&mut self.ns, conn, bytes, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Machine::poll_output(&mut self.ns)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Machine::poll_timeout(&self.ns)
    }
}

impl Durable for ControllerNamesrv {
    fn flush_job(&self, upto: u64) -> Result<FlushJob, String> {
        Err(format!("the name server asked for a flush to {upto}"))
    }
    fn persist_job(&self, token: u64, files: Vec<(String, Bytes)>) -> Result<FlushJob, String> {
        Ok(FlushJob {
            done: FlushDone::Persist(token),
            sync: self.disk.write_job(files)?,
        })
    }
}

/// Serves a name server with its controller on `listen`, its raft log under `data_dir`.
pub async fn start_controller_namesrv(
    listen: &str,
    ns_config: NameServerConfig,
    config: ControllerConfig,
    data_dir: &Path,
) -> Result<ServerHandle<ControllerNamesrv>, LaunchError> {
    let machine =
        ControllerNamesrv::open(ns_config, config, data_dir, now_ms()).map_err(|error| {
            LaunchError::Store {
                dir: data_dir.display().to_string(),
                error,
            }
        })?;
    let server = Server::bind(listen, machine)
        .await
        .map_err(|error| LaunchError::Bind {
            addr: listen.into(),
            error,
        })?;
    tracing::info!(addr = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(), "name server with controller listening");
    Ok(server.spawn())
}
