//! Admin commands: Identify, Get Log Page, Set/Get Features, Async Event Request, Keep
//! Alive and Abort, for I/O and discovery controllers alike (a discovery controller
//! answers only what a discovery host asks: Identify Controller and the discovery log).

use crate::command::{admin_op, Completion, Sqe, Status};
use crate::config::AnaState;
use crate::controller::Controller;
use crate::identify::{self, cns};
use crate::log_page::{self, lid};
use crate::target::Target;
use std::sync::Arc;

/// What a command produced: its completion and, for controller-to-host commands, data.
#[derive(Debug)]
pub struct Outcome {
    pub completion: Completion,
    pub data: Option<Vec<u8>>,
}

impl Outcome {
    pub fn status(status: Status) -> Outcome {
        Outcome {
            completion: Completion::error(status),
            data: None,
        }
    }

    pub fn ok(dw0: u32) -> Outcome {
        Outcome {
            completion: Completion::ok(dw0),
            data: None,
        }
    }

    pub fn data(data: Vec<u8>) -> Outcome {
        Outcome {
            completion: Completion::ok(0),
            data: Some(data),
        }
    }
}

/// Feature identifiers.
pub mod fid {
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
    pub const HOST_BEHAVIOR: u8 = 0x16;
}

/// Runs one admin command. `data` is what the host sent with it (Set Features).
pub async fn execute(
    target: &Target,
    controller: &Arc<Controller>,
    sqe: &Sqe,
    data: &[u8],
) -> Outcome {
    match sqe.opcode() {
        admin_op::IDENTIFY => identify(target, controller, sqe),
        admin_op::GET_LOG_PAGE => get_log_page(target, controller, sqe),
        admin_op::SET_FEATURES => set_features(controller, sqe, data),
        admin_op::GET_FEATURES => get_features(controller, sqe),
        admin_op::KEEP_ALIVE => Outcome::ok(0),
        // Commands finish as fast as the cluster answers; aborting one would not stop the
        // cluster request, so every Abort answers "not aborted" (dw0 bit 0), as allowed.
        admin_op::ABORT => Outcome::ok(1),
        admin_op::ASYNC_EVENT_REQUEST => match controller.add_aer(sqe.cid()) {
            Ok(receiver) => match receiver.await {
                Ok(event) => Outcome::ok(event),
                Err(_) => Outcome::status(Status::ABORTED),
            },
            Err(status) => Outcome::status(status),
        },
        _ => Outcome::status(Status::INVALID_OPCODE),
    }
}

fn identify(target: &Target, controller: &Controller, sqe: &Sqe) -> Outcome {
    let cns = (sqe.cdw(10) & 0xff) as u8;
    if controller.discovery {
        return match cns {
            cns::CONTROLLER => Outcome::data(identify::discovery_controller(controller)),
            _ => Outcome::status(Status::INVALID_FIELD),
        };
    }
    let Some(subsystem) = target.subsystem(&controller.subnqn) else {
        return Outcome::status(Status::INTERNAL_ERROR);
    };
    let namespaces = target.namespaces(&controller.subnqn);
    let nsid = sqe.nsid();
    match cns {
        cns::CONTROLLER => {
            Outcome::data(identify::controller(controller, &subsystem, target.crdt()))
        }
        cns::NAMESPACE => {
            if nsid == 0 || nsid == u32::MAX {
                return Outcome::status(Status::INVALID_NAMESPACE);
            }
            match namespaces.iter().find(|(ns, _)| ns.nsid == nsid) {
                Some((ns, bdev)) => Outcome::data(identify::namespace(
                    ns,
                    bdev.device.size_bytes(),
                    subsystem.ana_reporting,
                )),
                // An inactive nsid inside the range: an all-zero structure.
                None if nsid <= subsystem.max_namespaces => {
                    Outcome::data(vec![0; identify::IDENTIFY_BYTES])
                }
                None => Outcome::status(Status::INVALID_NAMESPACE),
            }
        }
        cns::ACTIVE_NS_LIST => {
            if nsid >= 0xffff_fffe {
                return Outcome::status(Status::INVALID_NAMESPACE);
            }
            let nsids: Vec<u32> = namespaces.iter().map(|(ns, _)| ns.nsid).collect();
            Outcome::data(identify::active_namespaces(&nsids, nsid))
        }
        cns::NS_DESCRIPTORS => match namespaces.iter().find(|(ns, _)| ns.nsid == nsid) {
            Some((ns, _)) => Outcome::data(identify::namespace_descriptors(ns)),
            None => Outcome::status(Status::INVALID_NAMESPACE),
        },
        _ => Outcome::status(Status::INVALID_FIELD),
    }
}

fn get_log_page(target: &Target, controller: &Controller, sqe: &Sqe) -> Outcome {
    let cdw10 = sqe.cdw(10);
    let page_id = (cdw10 & 0xff) as u8;
    let lsp = ((cdw10 >> 8) & 0x7f) as u8;
    let numd = ((u64::from(sqe.cdw(11) & 0xffff) << 16) | u64::from(cdw10 >> 16)) + 1;
    let offset_bytes = u64::from(sqe.cdw(12)) | (u64::from(sqe.cdw(13)) << 32);
    let len_bytes = (numd * 4).min(u64::from(sqe.sgl_length_bytes())) as usize;
    if offset_bytes % 4 != 0 {
        return Outcome::status(Status::INVALID_FIELD);
    }
    let page = if controller.discovery {
        match page_id {
            lid::DISCOVERY => {
                log_page::discovery(target.genctr(), &target.subsystems(), &controller.hostnqn)
            }
            _ => return Outcome::status(Status::INVALID_LOG_PAGE),
        }
    } else {
        match page_id {
            lid::ERROR => log_page::error_log(),
            lid::SMART => {
                let namespaces = target.namespaces(&controller.subnqn);
                let stats: Vec<&crate::target::IoStats> =
                    namespaces.iter().map(|(_, bdev)| &bdev.stats).collect();
                log_page::smart(&stats)
            }
            lid::FIRMWARE_SLOT => log_page::firmware_slot(),
            lid::CHANGED_NS => log_page::changed_namespaces(controller.take_changed_ns()),
            lid::COMMANDS_EFFECTS => log_page::commands_effects(),
            lid::ANA => {
                let Some(subsystem) = target.subsystem(&controller.subnqn) else {
                    return Outcome::status(Status::INTERNAL_ERROR);
                };
                if !subsystem.ana_reporting {
                    return Outcome::status(Status::INVALID_LOG_PAGE);
                }
                let listener = subsystem.listener(&controller.listen_key).cloned();
                let state_of = |group: u32| {
                    listener
                        .as_ref()
                        .map_or(AnaState::Inaccessible, |l| l.ana_state(group))
                        .code()
                };
                log_page::ana(
                    target.ana_change_count(),
                    &subsystem.namespaces,
                    &state_of,
                    lsp & 1 != 0,
                )
            }
            _ => return Outcome::status(Status::INVALID_LOG_PAGE),
        }
    };
    Outcome::data(log_page::window(&page, offset_bytes, len_bytes))
}

fn set_features(controller: &Controller, sqe: &Sqe, data: &[u8]) -> Outcome {
    let cdw10 = sqe.cdw(10);
    if cdw10 & (1 << 31) != 0 {
        return Outcome::status(Status::FEATURE_NOT_SAVEABLE);
    }
    let value = sqe.cdw(11);
    match (cdw10 & 0xff) as u8 {
        fid::NUMBER_OF_QUEUES if !controller.discovery => {
            if value & 0xffff == 0xffff || value >> 16 == 0xffff {
                return Outcome::status(Status::INVALID_FIELD);
            }
            Outcome::ok(controller.set_num_queues(value))
        }
        fid::KEEP_ALIVE_TIMER => {
            controller.set_kato_ms(value);
            Outcome::ok(0)
        }
        fid::ASYNC_EVENT_CONFIG => {
            controller.set_async_event_config(value);
            Outcome::ok(0)
        }
        fid::HOST_BEHAVIOR if !controller.discovery => {
            controller.set_host_behavior(data);
            Outcome::ok(0)
        }
        // The cache cannot be turned off (writes go to the cluster; Flush syncs them),
        // so enabling is accepted and disabling refused.
        fid::VOLATILE_WRITE_CACHE if !controller.discovery => {
            if value & 1 == 1 {
                Outcome::ok(0)
            } else {
                Outcome::status(Status::INVALID_FIELD)
            }
        }
        _ => Outcome::status(Status::INVALID_FIELD),
    }
}

fn get_features(controller: &Controller, sqe: &Sqe) -> Outcome {
    let cdw10 = sqe.cdw(10);
    let select = (cdw10 >> 8) & 7;
    if select == 3 {
        // Supported capabilities: changeable, not saveable.
        return Outcome::ok(1 << 2);
    }
    match (cdw10 & 0xff) as u8 {
        fid::NUMBER_OF_QUEUES if !controller.discovery => Outcome::ok(controller.num_queues()),
        fid::KEEP_ALIVE_TIMER => Outcome::ok(controller.kato_ms()),
        fid::ASYNC_EVENT_CONFIG => Outcome::ok(controller.async_event_config()),
        fid::HOST_BEHAVIOR if !controller.discovery => {
            let mut outcome = Outcome::data(controller.host_behavior());
            outcome.completion.dw0 = 0;
            outcome
        }
        fid::VOLATILE_WRITE_CACHE if !controller.discovery => Outcome::ok(1),
        _ => Outcome::status(Status::INVALID_FIELD),
    }
}
