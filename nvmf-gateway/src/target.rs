//! The target: bdevs, subsystems with their namespaces, hosts and listeners, and the live
//! controllers. One lock guards it all; it is never held across an await, and every
//! change that a host can see (namespaces, ANA states) raises the event on the controllers
//! it concerns.

use crate::command::Status;
use crate::config::{
    AnaState, BdevConfig, GatewayConfig, ListenAddress, ListenerConfig, NamespaceConfig,
    SubsystemConfig, DISCOVERY_NQN,
};
use crate::controller::{event, Controller, TeardownReason, KATO_DEFAULT_MS};
use crate::device::BlockDevice;
use crate::qos::Qos;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Live controllers of the whole gateway; Connect beyond this is answered "busy".
pub const CONTROLLERS_MAX: usize = 1024;

/// I/O counters of a bdev (`bdev_get_iostat`).
#[derive(Debug, Default)]
pub struct IoStats {
    pub bytes_read: AtomicU64,
    pub num_read_ops: AtomicU64,
    pub bytes_written: AtomicU64,
    pub num_write_ops: AtomicU64,
    pub bytes_unmapped: AtomicU64,
    pub num_unmap_ops: AtomicU64,
    pub read_latency_us: AtomicU64,
    pub write_latency_us: AtomicU64,
}

/// A block device registered by `bdev_vitastor_create`.
pub struct Bdev {
    pub config: Mutex<BdevConfig>,
    pub device: Arc<dyn BlockDevice>,
    pub qos: Qos,
    pub stats: IoStats,
}

impl Bdev {
    pub fn new(config: BdevConfig, device: Arc<dyn BlockDevice>) -> Bdev {
        let qos = Qos::default();
        qos.set_limits(config.qos);
        Bdev {
            config: Mutex::new(config),
            device,
            qos,
            stats: IoStats::default(),
        }
    }

    pub fn name(&self) -> String {
        self.config.lock().expect("not poisoned").name.clone()
    }
}

/// What an I/O command needs of its namespace, looked up once per command.
pub struct NamespaceView {
    pub bdev: Arc<Bdev>,
    pub ana_state: AnaState,
}

/// An error of a configuration call: the message the RPC returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

#[derive(Default)]
struct State {
    bdevs: BTreeMap<String, Arc<Bdev>>,
    subsystems: BTreeMap<String, SubsystemConfig>,
    discovery_listeners: Vec<ListenAddress>,
    crdt: [u16; 3],
    transport: Option<serde_json::Value>,
    /// Live controllers by (subsystem NQN, cntlid).
    controllers: BTreeMap<(String, u16), Arc<Controller>>,
    /// The next controller id to try per subsystem.
    next_cntlid: BTreeMap<String, u16>,
    /// Discovery log generation: bumped on every change a discovery host could see.
    genctr: u64,
    /// ANA change count, reported in the ANA log page.
    ana_change_count: u64,
}

/// The whole target.
#[derive(Default)]
pub struct Target {
    state: Mutex<State>,
}

/// What a successful Connect gives the queue.
pub struct Connected {
    pub controller: Arc<Controller>,
}

/// A refused Connect: the status and the CQE dw0 (attribute and offset of the bad field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRefused {
    pub status: Status,
    pub dw0: u32,
}

/// The Connect data fields the target checks.
pub struct ConnectRequest<'a> {
    pub qid: u16,
    pub kato_ms: u32,
    pub hostid: [u8; 16],
    pub cntlid: u16,
    pub subnqn: &'a str,
    pub hostnqn: &'a str,
    pub listen_key: (String, String),
}

/// Connect's "invalid parameter" locator: IATTR 1 (in the data) and the byte offset.
fn bad_data_field(offset: u32) -> ConnectRefused {
    ConnectRefused {
        status: Status::CONNECT_INVALID_PARAMETERS,
        dw0: 1 | (offset << 16),
    }
}

impl Target {
    pub fn new() -> Target {
        Target::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    // ---- configuration ----

    pub fn config(&self) -> GatewayConfig {
        let state = self.state();
        GatewayConfig {
            bdevs: state
                .bdevs
                .values()
                .map(|b| b.config.lock().expect("not poisoned").clone())
                .collect(),
            subsystems: state.subsystems.values().cloned().collect(),
            discovery_listeners: state.discovery_listeners.clone(),
            crdt: state.crdt,
            transport: state.transport.clone(),
        }
    }

    pub fn set_crdt(&self, crdt: [u16; 3]) {
        self.state().crdt = crdt;
    }

    pub fn crdt(&self) -> [u16; 3] {
        self.state().crdt
    }

    pub fn set_transport(&self, params: serde_json::Value) -> Result<(), ConfigError> {
        let mut state = self.state();
        if state.transport.is_some() {
            return err("transport TCP already exists");
        }
        state.transport = Some(params);
        Ok(())
    }

    pub fn transport(&self) -> Option<serde_json::Value> {
        self.state().transport.clone()
    }

    pub fn add_bdev(&self, bdev: Arc<Bdev>) -> Result<(), ConfigError> {
        let name = bdev.name();
        let mut state = self.state();
        if state.bdevs.contains_key(&name) {
            return err(format!("bdev {name} already exists"));
        }
        state.bdevs.insert(name, bdev);
        Ok(())
    }

    pub fn bdev(&self, name: &str) -> Option<Arc<Bdev>> {
        self.state().bdevs.get(name).cloned()
    }

    pub fn bdevs(&self) -> Vec<Arc<Bdev>> {
        self.state().bdevs.values().cloned().collect()
    }

    /// Removes a bdev and every namespace that exports it (the hosts get the event).
    pub fn remove_bdev(&self, name: &str) -> Result<(), ConfigError> {
        let mut state = self.state();
        if state.bdevs.remove(name).is_none() {
            return err(format!("bdev {name} does not exist"));
        }
        let mut removed = Vec::new();
        for subsystem in state.subsystems.values_mut() {
            subsystem.namespaces.retain(|ns| {
                if ns.bdev_name == name {
                    removed.push((subsystem.nqn.clone(), ns.nsid));
                    false
                } else {
                    true
                }
            });
        }
        for (nqn, nsid) in removed {
            notify_namespace(&state, &nqn, nsid);
        }
        Ok(())
    }

    pub fn create_subsystem(&self, config: SubsystemConfig) -> Result<(), ConfigError> {
        let mut state = self.state();
        if config.nqn == DISCOVERY_NQN || state.subsystems.contains_key(&config.nqn) {
            return err(format!("subsystem {} already exists", config.nqn));
        }
        if config.min_cntlid == 0 || config.min_cntlid > config.max_cntlid {
            return err(format!(
                "invalid cntlid range {}-{}",
                config.min_cntlid, config.max_cntlid
            ));
        }
        state
            .next_cntlid
            .insert(config.nqn.clone(), config.min_cntlid);
        state.subsystems.insert(config.nqn.clone(), config);
        state.genctr += 1;
        Ok(())
    }

    pub fn delete_subsystem(&self, nqn: &str) -> Result<SubsystemConfig, ConfigError> {
        let mut state = self.state();
        let Some(config) = state.subsystems.remove(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        state.next_cntlid.remove(nqn);
        let gone: Vec<(String, u16)> = state
            .controllers
            .keys()
            .filter(|(sub, _)| sub == nqn)
            .cloned()
            .collect();
        for key in gone {
            if let Some(controller) = state.controllers.remove(&key) {
                controller.tear_down(TeardownReason::SubsystemDeleted);
            }
        }
        state.genctr += 1;
        Ok(config)
    }

    pub fn subsystem(&self, nqn: &str) -> Option<SubsystemConfig> {
        self.state().subsystems.get(nqn).cloned()
    }

    pub fn subsystems(&self) -> Vec<SubsystemConfig> {
        self.state().subsystems.values().cloned().collect()
    }

    pub fn discovery_listeners(&self) -> Vec<ListenAddress> {
        self.state().discovery_listeners.clone()
    }

    /// Adds a namespace; returns its nsid (the lowest free one when not given).
    pub fn add_namespace(
        &self,
        nqn: &str,
        bdev_name: &str,
        nsid: Option<u32>,
        uuid: Option<[u8; 16]>,
        nguid: Option<[u8; 16]>,
        anagrpid: Option<u32>,
    ) -> Result<u32, ConfigError> {
        let mut state = self.state();
        let Some(bdev) = state.bdevs.get(bdev_name).cloned() else {
            return err(format!("bdev {bdev_name} does not exist"));
        };
        let Some(subsystem) = state.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        if subsystem.namespaces.len() as u32 >= subsystem.max_namespaces {
            return err(format!(
                "subsystem {nqn} has its maximum of {} namespaces",
                subsystem.max_namespaces
            ));
        }
        let nsid = match nsid {
            Some(0) | None => (1..=subsystem.max_namespaces)
                .find(|n| subsystem.namespace(*n).is_none())
                .ok_or_else(|| ConfigError("no free nsid".into()))?,
            Some(n) if n > subsystem.max_namespaces || n == u32::MAX => {
                return err(format!(
                    "nsid {n} is above max_namespaces {}",
                    subsystem.max_namespaces
                ))
            }
            Some(n) if subsystem.namespace(n).is_some() => {
                return err(format!("nsid {n} is already in use in {nqn}"))
            }
            Some(n) => n,
        };
        // A namespace's identity defaults to its bdev's UUID, so two gateways exporting
        // one image get the same identity when they are given the same bdev uuid.
        let bdev_uuid = bdev.config.lock().expect("not poisoned").uuid;
        let uuid = uuid.unwrap_or(bdev_uuid);
        let nguid = nguid.unwrap_or(uuid);
        let anagrpid = anagrpid.filter(|g| *g != 0).unwrap_or(nsid);
        subsystem.namespaces.push(NamespaceConfig {
            nsid,
            bdev_name: bdev_name.to_string(),
            uuid,
            nguid,
            anagrpid,
        });
        subsystem.namespaces.sort_by_key(|ns| ns.nsid);
        notify_namespace(&state, nqn, nsid);
        Ok(nsid)
    }

    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), ConfigError> {
        let mut state = self.state();
        let Some(subsystem) = state.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        let before = subsystem.namespaces.len();
        subsystem.namespaces.retain(|ns| ns.nsid != nsid);
        if subsystem.namespaces.len() == before {
            return err(format!("namespace {nsid} does not exist in {nqn}"));
        }
        notify_namespace(&state, nqn, nsid);
        Ok(())
    }

    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), ConfigError> {
        let mut state = self.state();
        let Some(subsystem) = state.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        if subsystem.hosts.iter().any(|h| h == host) {
            return err(format!("host {host} is already allowed in {nqn}"));
        }
        subsystem.hosts.push(host.to_string());
        state.genctr += 1;
        Ok(())
    }

    /// Removes a host; its controllers of this subsystem are torn down, as SPDK does.
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), ConfigError> {
        let mut state = self.state();
        let Some(subsystem) = state.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        let before = subsystem.hosts.len();
        subsystem.hosts.retain(|h| h != host);
        if subsystem.hosts.len() == before {
            return err(format!("host {host} is not allowed in {nqn}"));
        }
        let allow_any = subsystem.allow_any_host;
        if !allow_any {
            let gone: Vec<(String, u16)> = state
                .controllers
                .iter()
                .filter(|((sub, _), c)| sub == nqn && c.hostnqn == host)
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                if let Some(controller) = state.controllers.remove(&key) {
                    controller.tear_down(TeardownReason::HostRemoved);
                }
            }
        }
        state.genctr += 1;
        Ok(())
    }

    /// Records a listener (the caller binds the socket first).
    pub fn add_listener(&self, nqn: &str, address: ListenAddress) -> Result<(), ConfigError> {
        let mut state = self.state();
        if nqn == DISCOVERY_NQN {
            if state
                .discovery_listeners
                .iter()
                .any(|a| a.key() == address.key())
            {
                return err("the discovery subsystem already listens there");
            }
            state.discovery_listeners.push(address);
        } else {
            let Some(subsystem) = state.subsystems.get_mut(nqn) else {
                return err(format!("subsystem {nqn} does not exist"));
            };
            if subsystem.listener(&address.key()).is_some() {
                return err(format!(
                    "{nqn} already listens on {}:{}",
                    address.traddr, address.trsvcid
                ));
            }
            subsystem.listeners.push(ListenerConfig {
                address,
                ana_states: BTreeMap::new(),
            });
        }
        state.genctr += 1;
        Ok(())
    }

    pub fn remove_listener(&self, nqn: &str, key: &(String, String)) -> Result<(), ConfigError> {
        let mut state = self.state();
        if nqn == DISCOVERY_NQN {
            let before = state.discovery_listeners.len();
            state.discovery_listeners.retain(|a| &a.key() != key);
            if before == state.discovery_listeners.len() {
                return err("the discovery subsystem does not listen there");
            }
        } else {
            let Some(subsystem) = state.subsystems.get_mut(nqn) else {
                return err(format!("subsystem {nqn} does not exist"));
            };
            let before = subsystem.listeners.len();
            subsystem.listeners.retain(|l| &l.address.key() != key);
            if before == subsystem.listeners.len() {
                return err(format!("{nqn} does not listen on {}:{}", key.0, key.1));
            }
        }
        state.genctr += 1;
        Ok(())
    }

    /// Whether any subsystem (or the discovery subsystem) still listens at `key`.
    pub fn listener_in_use(&self, key: &(String, String)) -> bool {
        let state = self.state();
        state.discovery_listeners.iter().any(|a| &a.key() == key)
            || state.subsystems.values().any(|s| s.listener(key).is_some())
    }

    pub fn set_ana_state(
        &self,
        nqn: &str,
        key: &(String, String),
        ana_state: AnaState,
        anagrpid: Option<u32>,
    ) -> Result<(), ConfigError> {
        let mut state = self.state();
        let Some(subsystem) = state.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        let groups: Vec<u32> = match anagrpid {
            Some(group) => vec![group],
            None => subsystem.namespaces.iter().map(|ns| ns.anagrpid).collect(),
        };
        let Some(listener) = subsystem
            .listeners
            .iter_mut()
            .find(|l| &l.address.key() == key)
        else {
            return err(format!("{nqn} does not listen on {}:{}", key.0, key.1));
        };
        // With no group given, every group (also those of namespaces added later) takes
        // the state: kept under group 0, the default.
        if anagrpid.is_none() {
            listener.ana_states.clear();
            listener.ana_states.insert(0, ana_state);
        }
        for group in groups {
            listener.ana_states.insert(group, ana_state);
        }
        state.ana_change_count += 1;
        for ((sub, _), controller) in &state.controllers {
            if sub == nqn && &controller.listen_key == key {
                controller.raise_event(event::ANA_CHANGED, event::AEC_ANA);
            }
        }
        Ok(())
    }

    pub fn ana_change_count(&self) -> u64 {
        self.state().ana_change_count
    }

    // ---- controllers ----

    /// Fabrics Connect: checks the subsystem, the listener, the host ACL and the
    /// controller id, then creates the controller (admin queue) or returns the existing
    /// one (I/O queue).
    pub fn connect(&self, request: &ConnectRequest) -> Result<Connected, ConnectRefused> {
        let mut state = self.state();
        let discovery = request.subnqn == DISCOVERY_NQN;
        let subsystem = if discovery {
            None
        } else {
            let Some(subsystem) = state.subsystems.get(request.subnqn) else {
                return Err(bad_data_field(256));
            };
            if subsystem.listener(&request.listen_key).is_none() {
                return Err(bad_data_field(256));
            }
            if !subsystem.host_allowed(request.hostnqn) {
                return Err(ConnectRefused {
                    status: Status::CONNECT_INVALID_HOST,
                    dw0: 1 | (512 << 16),
                });
            }
            Some(subsystem.clone())
        };
        if request.qid > 0 {
            let key = (request.subnqn.to_string(), request.cntlid);
            let Some(controller) = state.controllers.get(&key) else {
                return Err(bad_data_field(16));
            };
            if controller.hostnqn != request.hostnqn || controller.hostid != request.hostid {
                return Err(bad_data_field(512));
            }
            if !controller.is_ready() {
                return Err(ConnectRefused {
                    status: Status::COMMAND_SEQUENCE_ERROR,
                    dw0: 0,
                });
            }
            return Ok(Connected {
                controller: controller.clone(),
            });
        }
        if request.cntlid != 0xffff && request.cntlid != 0xfffe {
            // Static controllers are not offered: the host must ask for a dynamic one.
            return Err(bad_data_field(16));
        }
        if state.controllers.len() >= CONTROLLERS_MAX {
            return Err(ConnectRefused {
                status: Status::CONNECT_CONTROLLER_BUSY,
                dw0: 0,
            });
        }
        let (min, max) = subsystem
            .as_ref()
            .map_or((1, 0xffef), |s| (s.min_cntlid, s.max_cntlid));
        let start = state
            .next_cntlid
            .get(request.subnqn)
            .copied()
            .unwrap_or(min)
            .clamp(min, max);
        let span = u32::from(max - min) + 1;
        let mut cntlid = None;
        for step in 0..span {
            let candidate = (u32::from(start - min) + step) % span + u32::from(min);
            let candidate = candidate as u16;
            if !state
                .controllers
                .contains_key(&(request.subnqn.to_string(), candidate))
            {
                cntlid = Some(candidate);
                break;
            }
        }
        let Some(cntlid) = cntlid else {
            return Err(ConnectRefused {
                status: Status::CONNECT_CONTROLLER_BUSY,
                dw0: 0,
            });
        };
        assert!((min..=max).contains(&cntlid), "cntlid inside the range");
        let next = if cntlid == max { min } else { cntlid + 1 };
        state.next_cntlid.insert(request.subnqn.to_string(), next);
        let kato_ms = if discovery {
            request.kato_ms
        } else if request.kato_ms == 0 {
            KATO_DEFAULT_MS
        } else {
            request.kato_ms
        };
        let controller = Arc::new(Controller::new(
            cntlid,
            request.subnqn,
            request.hostnqn,
            request.hostid,
            discovery,
            request.listen_key.clone(),
            kato_ms,
        ));
        state
            .controllers
            .insert((request.subnqn.to_string(), cntlid), controller.clone());
        tracing::info!(
            "controller {cntlid} of {} for {} created",
            request.subnqn,
            request.hostnqn
        );
        Ok(Connected { controller })
    }

    /// Removes a controller (its admin queue closed).
    pub fn remove_controller(&self, controller: &Controller, reason: TeardownReason) {
        let mut state = self.state();
        let key = (controller.subnqn.clone(), controller.cntlid);
        if let Some(found) = state.controllers.get(&key) {
            if std::ptr::eq(Arc::as_ptr(found), controller) {
                state.controllers.remove(&key);
            }
        }
        controller.tear_down(reason);
    }

    /// Tears down controllers whose keep-alive timer ran out; returns how many.
    pub fn reap_idle_controllers(&self, now: Instant) -> usize {
        let mut state = self.state();
        let expired: Vec<(String, u16)> = state
            .controllers
            .iter()
            .filter(|(_, c)| c.keep_alive_expired(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            if let Some(controller) = state.controllers.remove(key) {
                controller.tear_down(TeardownReason::KeepAliveExpired);
            }
        }
        expired.len()
    }

    pub fn controller_count(&self) -> usize {
        self.state().controllers.len()
    }

    /// The namespace `nsid` of the controller's subsystem as an I/O command sees it.
    pub fn namespace_view(&self, controller: &Controller, nsid: u32) -> Option<NamespaceView> {
        let state = self.state();
        let subsystem = state.subsystems.get(&controller.subnqn)?;
        let ns = subsystem.namespace(nsid)?;
        let bdev = state.bdevs.get(&ns.bdev_name)?.clone();
        let ana_state = subsystem
            .listener(&controller.listen_key)
            .map_or(AnaState::Inaccessible, |l| l.ana_state(ns.anagrpid));
        Some(NamespaceView { bdev, ana_state })
    }

    /// Namespaces of a subsystem with their bdev (for Identify).
    pub fn namespaces(&self, nqn: &str) -> Vec<(NamespaceConfig, Arc<Bdev>)> {
        let state = self.state();
        let Some(subsystem) = state.subsystems.get(nqn) else {
            return Vec::new();
        };
        subsystem
            .namespaces
            .iter()
            .filter_map(|ns| Some((ns.clone(), state.bdevs.get(&ns.bdev_name)?.clone())))
            .collect()
    }

    pub fn genctr(&self) -> u64 {
        self.state().genctr
    }
}

/// Tells every controller of `nqn` that namespace `nsid` changed.
fn notify_namespace(state: &State, nqn: &str, nsid: u32) {
    for ((sub, _), controller) in &state.controllers {
        if sub == nqn {
            controller.namespace_changed(nsid);
        }
    }
}
