//! The methods: SPDK's names and params (see GATEWAY-FACTS), plus `bdev_vitastor_create`
//! and `bdev_vitastor_delete` in the style of `bdev_rbd_create`. Every method that changes
//! the configuration stores it in etcd before it answers; [`restore`] replays a stored
//! configuration through the same functions at start.

use super::params::Params;
use super::{RpcError, METHOD_NOT_FOUND};
use crate::config::{
    nguid_string, parse_hex16, random_uuid, uuid_string, AnaState, BdevConfig, GatewayConfig,
    ListenAddress, SubsystemConfig, CNTLID_MAX, CNTLID_MIN, DISCOVERY_NQN, MODEL_DEFAULT,
    NAMESPACES_MAX,
};
use crate::device::BLOCK_BYTES;
use crate::gateway::Gateway;
use crate::qos::QosLimits;
use crate::target::Bdev;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub const METHODS: &[&str] = &[
    "rpc_get_methods",
    "framework_start_init",
    "framework_wait_init",
    "bdev_set_options",
    "nvmf_set_crdt",
    "nvmf_create_transport",
    "nvmf_get_transports",
    "nvmf_create_subsystem",
    "nvmf_delete_subsystem",
    "nvmf_subsystem_add_ns",
    "nvmf_subsystem_remove_ns",
    "nvmf_subsystem_add_listener",
    "nvmf_subsystem_remove_listener",
    "nvmf_subsystem_add_host",
    "nvmf_subsystem_remove_host",
    "nvmf_subsystem_listener_set_ana_state",
    "nvmf_get_subsystems",
    "bdev_get_bdevs",
    "bdev_get_iostat",
    "bdev_set_qos_limit",
    "bdev_vitastor_create",
    "bdev_vitastor_delete",
];

/// Methods that change the configuration (stored after they succeed).
fn changes_config(method: &str) -> bool {
    !matches!(
        method,
        "rpc_get_methods"
            | "framework_start_init"
            | "framework_wait_init"
            | "bdev_set_options"
            | "nvmf_get_transports"
            | "nvmf_get_subsystems"
            | "bdev_get_bdevs"
            | "bdev_get_iostat"
    )
}

pub async fn call(
    gateway: &Gateway,
    method: &str,
    params: Option<&Value>,
) -> Result<Value, RpcError> {
    if !METHODS.contains(&method) {
        return Err(RpcError {
            code: METHOD_NOT_FOUND,
            message: format!("Method not found: {method}"),
        });
    }
    let p = Params::new(params)?;
    let result = dispatch(gateway, method, &p).await?;
    if changes_config(method) {
        gateway.save().await.map_err(RpcError::internal)?;
    }
    Ok(result)
}

async fn dispatch(gateway: &Gateway, method: &str, p: &Params) -> Result<Value, RpcError> {
    let target = &gateway.target;
    match method {
        "rpc_get_methods" => Ok(json!(METHODS)),
        "framework_start_init" | "framework_wait_init" | "bdev_set_options" => Ok(json!(true)),
        "nvmf_set_crdt" => {
            let crdt = [
                p.opt_u16("crdt1")?.unwrap_or(0),
                p.opt_u16("crdt2")?.unwrap_or(0),
                p.opt_u16("crdt3")?.unwrap_or(0),
            ];
            target.set_crdt(crdt);
            Ok(json!(true))
        }
        "nvmf_create_transport" => {
            let trtype = p.str("trtype")?;
            if !trtype.eq_ignore_ascii_case("tcp") {
                return Err(RpcError::invalid_params(format!(
                    "trtype: {trtype:?} is not supported (only TCP)"
                )));
            }
            target.set_transport(p.raw())?;
            Ok(json!(true))
        }
        "nvmf_get_transports" => Ok(json!(target
            .transport()
            .map(|t| vec![json!({"trtype": "TCP", "params": t})])
            .unwrap_or_default())),
        "nvmf_create_subsystem" => {
            let nqn = p.str("nqn")?;
            if nqn.len() > 223 || !nqn.starts_with("nqn.") {
                return Err(RpcError::invalid_params(format!(
                    "nqn: {nqn:?} is not an NQN"
                )));
            }
            let serial_number = p
                .opt_str("serial_number")?
                .unwrap_or_else(|| "00000000000000000000".into());
            if serial_number.len() > 20 {
                return Err(RpcError::invalid_params("serial_number: longer than 20"));
            }
            let model_number = p
                .opt_str("model_number")?
                .unwrap_or_else(|| MODEL_DEFAULT.into());
            if model_number.len() > 40 {
                return Err(RpcError::invalid_params("model_number: longer than 40"));
            }
            let min_cntlid = p.opt_u16("min_cntlid")?.unwrap_or(CNTLID_MIN);
            let max_cntlid = p.opt_u16("max_cntlid")?.unwrap_or(CNTLID_MAX);
            if min_cntlid < CNTLID_MIN || max_cntlid > CNTLID_MAX || min_cntlid > max_cntlid {
                return Err(RpcError::invalid_params(format!(
                    "min_cntlid/max_cntlid: {min_cntlid}-{max_cntlid} is not inside {CNTLID_MIN}-{CNTLID_MAX}"
                )));
            }
            let max_namespaces = match p.opt_u32("max_namespaces")? {
                None | Some(0) => NAMESPACES_MAX,
                Some(n) => n.min(NAMESPACES_MAX),
            };
            target.create_subsystem(SubsystemConfig {
                nqn,
                serial_number,
                model_number,
                allow_any_host: p.opt_bool("allow_any_host")?.unwrap_or(false),
                hosts: Vec::new(),
                min_cntlid,
                max_cntlid,
                ana_reporting: p.opt_bool("ana_reporting")?.unwrap_or(false),
                max_namespaces,
                namespaces: Vec::new(),
                listeners: Vec::new(),
            })?;
            Ok(json!(true))
        }
        "nvmf_delete_subsystem" => {
            let nqn = p.str("nqn")?;
            let config = target.delete_subsystem(&nqn)?;
            for listener in &config.listeners {
                gateway
                    .listeners
                    .release_unused(target, &listener.address.key());
            }
            Ok(json!(true))
        }
        "nvmf_subsystem_add_ns" => {
            let nqn = p.str("nqn")?;
            let ns = p.object("namespace")?;
            let bdev_name = ns.str("bdev_name")?;
            let hex = |field: &str| -> Result<Option<[u8; 16]>, RpcError> {
                match ns.opt_str(field)? {
                    None => Ok(None),
                    Some(text) => parse_hex16(&text).map(Some).ok_or_else(|| {
                        RpcError::invalid_params(format!(
                            "namespace.{field}: {text:?} is not 16 hex bytes"
                        ))
                    }),
                }
            };
            let nsid = target.add_namespace(
                &nqn,
                &bdev_name,
                ns.opt_u32("nsid")?,
                hex("uuid")?,
                hex("nguid")?,
                ns.opt_u32("anagrpid")?,
            )?;
            Ok(json!(nsid))
        }
        "nvmf_subsystem_remove_ns" => {
            target.remove_namespace(&p.str("nqn")?, p.u32("nsid")?)?;
            Ok(json!(true))
        }
        "nvmf_subsystem_add_listener" => {
            let nqn = p.str("nqn")?;
            let address = listen_address(&p.object("listen_address")?)?;
            // rpc.py's `-n/--ana-state` sets the new listener's state at once.
            let ana_state = match p.opt_str("ana_state")? {
                None => None,
                Some(text) => Some(AnaState::parse(&text).ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "ana_state: {text:?} is not optimized, non_optimized or inaccessible"
                    ))
                })?),
            };
            let key = address.key();
            add_listener(gateway, &nqn, address).await?;
            if let Some(state) = ana_state.filter(|_| nqn != DISCOVERY_NQN) {
                target.set_ana_state(&nqn, &key, state, None)?;
            }
            Ok(json!(true))
        }
        "nvmf_subsystem_remove_listener" => {
            let nqn = p.str("nqn")?;
            let address = listen_address(&p.object("listen_address")?)?;
            target.remove_listener(&nqn, &address.key())?;
            gateway.listeners.release_unused(target, &address.key());
            Ok(json!(true))
        }
        "nvmf_subsystem_add_host" => {
            target.add_host(&p.str("nqn")?, &p.str("host")?)?;
            Ok(json!(true))
        }
        "nvmf_subsystem_remove_host" => {
            target.remove_host(&p.str("nqn")?, &p.str("host")?)?;
            Ok(json!(true))
        }
        "nvmf_subsystem_listener_set_ana_state" => {
            let nqn = p.str("nqn")?;
            let text = p.str("ana_state")?;
            let state = AnaState::parse(&text).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "ana_state: {text:?} is not optimized, non_optimized or inaccessible"
                ))
            })?;
            let address = listen_address(&p.object("listen_address")?)?;
            target.set_ana_state(&nqn, &address.key(), state, p.opt_u32("anagrpid")?)?;
            Ok(json!(true))
        }
        "nvmf_get_subsystems" => get_subsystems(gateway, p.opt_str("nqn")?),
        "bdev_get_bdevs" => {
            let name = p.opt_str("name")?;
            let bdevs: Vec<Arc<Bdev>> = match &name {
                Some(name) => vec![target.bdev(name).ok_or_else(|| no_such_bdev(name))?],
                None => target.bdevs(),
            };
            Ok(Value::Array(bdevs.iter().map(|b| bdev_json(b)).collect()))
        }
        "bdev_get_iostat" => {
            // `name` (older clients) or `names` (rpc.py's --names a,b).
            let mut names: Vec<String> = p.opt_str("name")?.into_iter().collect();
            names.extend(p.opt_str_list("names")?.unwrap_or_default());
            let bdevs: Vec<Arc<Bdev>> = if names.is_empty() {
                target.bdevs()
            } else {
                names
                    .iter()
                    .map(|name| target.bdev(name).ok_or_else(|| no_such_bdev(name)))
                    .collect::<Result<_, _>>()?
            };
            let ticks = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            Ok(json!({
                "tick_rate": 1_000_000,
                "ticks": ticks,
                "bdevs": bdevs.iter().map(|b| iostat_json(b)).collect::<Vec<_>>(),
            }))
        }
        "bdev_set_qos_limit" => {
            let name = p.str("name")?;
            let bdev = target.bdev(&name).ok_or_else(|| no_such_bdev(&name))?;
            let mut limits = bdev.qos.limits();
            let mut any = false;
            for (field, slot) in [
                ("rw_ios_per_sec", &mut limits.rw_ios_per_sec),
                ("rw_mbytes_per_sec", &mut limits.rw_mbytes_per_sec),
                ("r_mbytes_per_sec", &mut limits.r_mbytes_per_sec),
                ("w_mbytes_per_sec", &mut limits.w_mbytes_per_sec),
            ] {
                if let Some(value) = p.opt_u64(field)? {
                    *slot = value;
                    any = true;
                }
            }
            if !any {
                return Err(RpcError::invalid_params(
                    "rw_ios_per_sec: give at least one of rw_ios_per_sec, rw_mbytes_per_sec, r_mbytes_per_sec, w_mbytes_per_sec",
                ));
            }
            set_qos(&bdev, limits);
            Ok(json!(true))
        }
        "bdev_vitastor_create" => {
            let name = p.str("name")?;
            let image = p.opt_str("image")?;
            let pool = p.opt_u32("pool")?;
            let inode = p.opt_u64("inode")?;
            match (&image, pool, inode) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                (Some(_), _, _) => {
                    return Err(RpcError::invalid_params(
                        "image: give image or pool+inode, not both",
                    ))
                }
                (None, None, _) => {
                    return Err(RpcError::invalid_params("image: missing (or pool+inode)"))
                }
                (None, Some(_), None) => return Err(RpcError::invalid_params("inode: missing")),
            }
            let uuid = match p.opt_str("uuid")? {
                Some(text) => parse_hex16(&text).ok_or_else(|| {
                    RpcError::invalid_params(format!("uuid: {text:?} is not a UUID"))
                })?,
                None => random_uuid(),
            };
            let config = BdevConfig {
                name: name.clone(),
                image,
                pool,
                inode,
                etcd_address: p.opt_str("etcd_address")?,
                etcd_prefix: p.opt_str("etcd_prefix")?,
                read_only: p.opt_bool("read_only")?.unwrap_or(false),
                uuid,
                qos: QosLimits::default(),
            };
            create_bdev(gateway, config).await?;
            Ok(json!(name))
        }
        "bdev_vitastor_delete" => {
            target.remove_bdev(&p.str("name")?)?;
            Ok(json!(true))
        }
        _ => unreachable!("every listed method is dispatched: {method}"),
    }
}

fn no_such_bdev(name: &str) -> RpcError {
    RpcError {
        code: -19,
        message: format!("No such device: bdev {name}"),
    }
}

fn set_qos(bdev: &Bdev, limits: QosLimits) {
    bdev.qos.set_limits(limits);
    bdev.config.lock().expect("not poisoned").qos = limits;
}

fn listen_address(p: &Params) -> Result<ListenAddress, RpcError> {
    let trtype = p.str("trtype")?;
    if !trtype.eq_ignore_ascii_case("tcp") {
        return Err(RpcError::invalid_params(format!(
            "listen_address.trtype: {trtype:?} is not supported (only TCP)"
        )));
    }
    let adrfam = p.opt_str("adrfam")?.unwrap_or_else(|| "IPv4".into());
    let trsvcid = p.str("trsvcid")?;
    if trsvcid.parse::<u16>().is_err() {
        return Err(RpcError::invalid_params(format!(
            "listen_address.trsvcid: {trsvcid:?} is not a port"
        )));
    }
    Ok(ListenAddress {
        trtype: "TCP".into(),
        adrfam,
        traddr: p.str("traddr")?,
        trsvcid,
    })
}

async fn add_listener(
    gateway: &Gateway,
    nqn: &str,
    address: ListenAddress,
) -> Result<(), RpcError> {
    let target = &gateway.target;
    if nqn != DISCOVERY_NQN && target.subsystem(nqn).is_none() {
        return Err(RpcError::invalid_params(format!(
            "nqn: subsystem {nqn} does not exist"
        )));
    }
    let key = address.key();
    gateway
        .listeners
        .ensure(target, &key)
        .await
        .map_err(RpcError::internal)?;
    if let Err(error) = target.add_listener(nqn, address) {
        gateway.listeners.release_unused(target, &key);
        return Err(error.into());
    }
    Ok(())
}

/// Opens and registers a bdev; nothing is registered when opening fails.
async fn create_bdev(gateway: &Gateway, config: BdevConfig) -> Result<(), RpcError> {
    if gateway.target.bdev(&config.name).is_some() {
        return Err(RpcError::invalid_params(format!(
            "name: bdev {} already exists",
            config.name
        )));
    }
    let device = gateway
        .open_bdev(&config)
        .await
        .map_err(|e| RpcError::internal(format!("bdev {}: {e}", config.name)))?;
    gateway
        .target
        .add_bdev(Arc::new(Bdev::new(config, device)))?;
    Ok(())
}

fn bdev_json(bdev: &Bdev) -> Value {
    let config = bdev.config.lock().expect("not poisoned").clone();
    let size = bdev.device.size_bytes();
    json!({
        "name": config.name,
        "aliases": [],
        "product_name": "Vitastor image",
        "block_size": BLOCK_BYTES,
        "num_blocks": size / BLOCK_BYTES,
        "uuid": uuid_string(&config.uuid),
        "assigned_rate_limits": {
            "rw_ios_per_sec": config.qos.rw_ios_per_sec,
            "rw_mbytes_per_sec": config.qos.rw_mbytes_per_sec,
            "r_mbytes_per_sec": config.qos.r_mbytes_per_sec,
            "w_mbytes_per_sec": config.qos.w_mbytes_per_sec,
        },
        "claimed": false,
        "zoned": false,
        "supported_io_types": {
            "read": true, "write": !bdev.device.read_only(), "unmap": true,
            "write_zeroes": true, "flush": true, "reset": false,
        },
        "driver_specific": {"vitastor": {
            "image": config.image, "pool": config.pool, "inode": config.inode,
            "etcd_address": config.etcd_address, "etcd_prefix": config.etcd_prefix,
            "read_only": config.read_only,
        }},
    })
}

fn iostat_json(bdev: &Bdev) -> Value {
    let s = &bdev.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    json!({
        "name": bdev.name(),
        "bytes_read": load(&s.bytes_read),
        "num_read_ops": load(&s.num_read_ops),
        "bytes_written": load(&s.bytes_written),
        "num_write_ops": load(&s.num_write_ops),
        "bytes_unmapped": load(&s.bytes_unmapped),
        "num_unmap_ops": load(&s.num_unmap_ops),
        "read_latency_ticks": load(&s.read_latency_us),
        "write_latency_ticks": load(&s.write_latency_us),
    })
}

fn address_json(address: &ListenAddress) -> Value {
    json!({"trtype": address.trtype, "adrfam": address.adrfam, "traddr": address.traddr, "trsvcid": address.trsvcid})
}

fn get_subsystems(gateway: &Gateway, nqn: Option<String>) -> Result<Value, RpcError> {
    let target = &gateway.target;
    let mut out = Vec::new();
    if nqn.as_deref().is_none_or(|n| n == DISCOVERY_NQN) {
        out.push(json!({
            "nqn": DISCOVERY_NQN,
            "subtype": "Discovery",
            "listen_addresses": target.discovery_listeners().iter().map(address_json).collect::<Vec<_>>(),
            "allow_any_host": true,
            "hosts": [],
        }));
    }
    let subsystems = match &nqn {
        Some(n) if n == DISCOVERY_NQN => Vec::new(),
        Some(n) => vec![target.subsystem(n).ok_or_else(|| {
            RpcError::invalid_params(format!("nqn: subsystem {n} does not exist"))
        })?],
        None => target.subsystems(),
    };
    for s in subsystems {
        out.push(json!({
            "nqn": s.nqn,
            "subtype": "NVMe",
            "listen_addresses": s.listeners.iter().map(|l| {
                let mut a = address_json(&l.address);
                a["ana_states"] = json!(l.ana_states);
                a
            }).collect::<Vec<_>>(),
            "allow_any_host": s.allow_any_host,
            "hosts": s.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
            "serial_number": s.serial_number,
            "model_number": s.model_number,
            "max_namespaces": s.max_namespaces,
            "min_cntlid": s.min_cntlid,
            "max_cntlid": s.max_cntlid,
            "ana_reporting": s.ana_reporting,
            "namespaces": s.namespaces.iter().map(|ns| json!({
                "nsid": ns.nsid,
                "bdev_name": ns.bdev_name,
                "name": ns.bdev_name,
                "uuid": uuid_string(&ns.uuid),
                "nguid": nguid_string(&ns.nguid),
                "anagrpid": ns.anagrpid,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Value::Array(out))
}

/// Replays a stored configuration. Each failure (a bdev whose image cannot be opened, a
/// port taken) is logged and the rest goes on; the stored document is left as it was, so
/// a later restart can still restore what failed now.
pub async fn restore(gateway: &Gateway, config: GatewayConfig) -> Vec<String> {
    let target = &gateway.target;
    let mut errors = Vec::new();
    target.set_crdt(config.crdt);
    if let Some(transport) = config.transport {
        let _ = target.set_transport(transport);
    }
    for bdev in config.bdevs {
        let name = bdev.name.clone();
        let qos = bdev.qos;
        match create_bdev(gateway, bdev).await {
            Ok(()) => {
                if let Some(b) = target.bdev(&name) {
                    set_qos(&b, qos);
                }
            }
            Err(e) => errors.push(e.message),
        }
    }
    for address in config.discovery_listeners {
        if let Err(e) = add_listener(gateway, DISCOVERY_NQN, address).await {
            errors.push(e.message);
        }
    }
    for subsystem in config.subsystems {
        let mut bare = subsystem.clone();
        bare.hosts.clear();
        bare.namespaces.clear();
        bare.listeners.clear();
        if let Err(e) = target.create_subsystem(bare) {
            errors.push(e.0);
            continue;
        }
        for host in &subsystem.hosts {
            if let Err(e) = target.add_host(&subsystem.nqn, host) {
                errors.push(e.0);
            }
        }
        for ns in &subsystem.namespaces {
            if let Err(e) = target.add_namespace(
                &subsystem.nqn,
                &ns.bdev_name,
                Some(ns.nsid),
                Some(ns.uuid),
                Some(ns.nguid),
                Some(ns.anagrpid),
            ) {
                errors.push(e.0);
            }
        }
        for listener in &subsystem.listeners {
            if let Err(e) = add_listener(gateway, &subsystem.nqn, listener.address.clone()).await {
                errors.push(e.message);
                continue;
            }
            for (group, state) in &listener.ana_states {
                let group = (*group != 0).then_some(*group);
                if let Err(e) =
                    target.set_ana_state(&subsystem.nqn, &listener.address.key(), *state, group)
                {
                    errors.push(e.0);
                }
            }
        }
    }
    errors
}
