//! One TCP connection = one queue pair.
//!
//! ```text
//!   accept --ICReq--> [ICResp sent] --CapsuleCmd(Connect)--> queue of a controller
//!      commands: CapsuleCmd --(host-to-controller data?)--+-- in the capsule ----> run
//!                                                        +-- R2T .. H2CData* --> run
//!      run: spawned; its C2HData and CapsuleResp go to the writer task
//! ```
//!
//! The reader owns the protocol state (pending R2T transfers, the SQ head); commands run
//! concurrently, bounded by the queue size the host connected with. Anything malformed
//! (a PDU that does not decode, data for an unknown transfer, more commands than the queue
//! holds) ends this connection only, with a C2HTermReq saying why. When the admin queue's
//! connection ends, its controller is torn down and the I/O queues' connections close.

use crate::admin::{self, Outcome};
use crate::command::{fctype, get_nul_padded, sgl, Completion, Sqe, Status, FABRICS_OPCODE};
use crate::controller::{
    property, Controller, TeardownReason, IO_QUEUES_MAX, QUEUE_ENTRIES_MAX, TRANSFER_MAX_BYTES,
};
use crate::identify::IN_CAPSULE_DATA_MAX_BYTES;
use crate::pdu::{self, CommonHeader, Digests, Pdu, PduError, COMMON_HEADER_BYTES};
use crate::target::{ConnectRequest, Target};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Time a new connection has to send its ICReq.
const IC_TIMEOUT: Duration = Duration::from_secs(10);
/// PDUs waiting for the writer: every in-flight command may have a data PDU and a
/// response queued, plus R2Ts.
const OUTGOING_PDUS_MAX: usize = 3 * QUEUE_ENTRIES_MAX as usize;
/// Bytes of Connect data.
const CONNECT_DATA_BYTES: usize = 1024;

/// Why a connection ended.
#[derive(Debug)]
pub enum Closed {
    /// The host closed it or sent a termination request.
    ByHost,
    /// The controller was torn down (admin queue gone, keep-alive, subsystem deleted).
    TornDown(TeardownReason),
    /// The host broke the protocol; a termination request was sent.
    Protocol(String),
    Io(std::io::Error),
}

/// A host-to-controller transfer waiting for its H2CData PDUs.
struct PendingTransfer {
    sqe: Sqe,
    sqhd: u16,
    data: Vec<u8>,
    expected_bytes: usize,
    permit: OwnedSemaphorePermit,
}

/// Queue state the reader keeps.
struct Queue {
    target: Arc<Target>,
    listen_key: (String, String),
    out: mpsc::Sender<Pdu>,
    controller: Option<Arc<Controller>>,
    qid: u16,
    /// Entries of the submission queue (Connect's SQSIZE + 1); the SQ head wraps there.
    sq_entries: u16,
    sqhd: u16,
    sq_flow_control: bool,
    in_flight: Arc<Semaphore>,
    transfers: HashMap<u16, PendingTransfer>,
    next_ttag: u16,
}

/// Serves one connection until it ends; never panics on what the host sends.
pub async fn serve<S>(stream: S, target: Arc<Target>, listen_key: (String, String)) -> Closed
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // ICReq first, within a deadline.
    let icreq =
        match tokio::time::timeout(IC_TIMEOUT, read_pdu(&mut reader, Digests::default())).await {
            Err(_) => return Closed::Protocol("no ICReq in time".into()),
            Ok(Err(ReadError::Io(e))) => return Closed::Io(e),
            Ok(Err(ReadError::Pdu(e, header))) => {
                let _ = terminate(&mut writer, &e, &header).await;
                return Closed::Protocol(e.to_string());
            }
            Ok(Ok(pdu)) => pdu,
        };
    let Pdu::IcReq {
        pfv, hpda, digests, ..
    } = icreq
    else {
        let error = PduError::UnknownType(0xff);
        let _ = terminate(&mut writer, &error, &[]).await;
        return Closed::Protocol("the first PDU is not an ICReq".into());
    };
    if pfv != 0 || hpda > 31 {
        let term = Pdu::TermReq {
            from_host: false,
            fes: pdu::fes::INVALID_HEADER_FIELD,
            fei: if pfv != 0 { 8 } else { 10 },
            data: Vec::new(),
        };
        let _ = writer.write_all(&term.encode(Digests::default(), 0)).await;
        return Closed::Protocol(format!("ICReq pfv {pfv} hpda {hpda}"));
    }
    let icresp = Pdu::IcResp {
        pfv: 0,
        cpda: 0,
        digests,
        maxh2cdata_bytes: TRANSFER_MAX_BYTES,
    };
    if let Err(e) = writer.write_all(&icresp.encode(digests, 0)).await {
        return Closed::Io(e);
    }
    let (out, mut outgoing) = mpsc::channel::<Pdu>(OUTGOING_PDUS_MAX);
    let writer_task = tokio::spawn(async move {
        while let Some(pdu) = outgoing.recv().await {
            if writer.write_all(&pdu.encode(digests, hpda)).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut queue = Queue {
        target,
        listen_key,
        out,
        controller: None,
        qid: 0,
        sq_entries: QUEUE_ENTRIES_MAX,
        sqhd: 0,
        sq_flow_control: true,
        in_flight: Arc::new(Semaphore::new(QUEUE_ENTRIES_MAX as usize)),
        transfers: HashMap::new(),
        next_ttag: 0,
    };
    let closed = queue.run(&mut reader, digests).await;
    if let Closed::Protocol(reason) = &closed {
        tracing::warn!("NVMe/TCP connection closed: {reason}");
    }
    if let Some(controller) = &queue.controller {
        if queue.qid == 0 {
            queue
                .target
                .remove_controller(controller, TeardownReason::AdminQueueClosed);
        }
    }
    drop(queue);
    let _ = writer_task.await;
    closed
}

enum ReadError {
    Io(std::io::Error),
    /// The PDU is malformed; the bytes of its header so far, for the termination request.
    Pdu(PduError, Vec<u8>),
}

async fn read_pdu<R: AsyncRead + Unpin>(
    reader: &mut R,
    digests: Digests,
) -> Result<Pdu, ReadError> {
    let mut header = [0u8; COMMON_HEADER_BYTES];
    reader
        .read_exact(&mut header)
        .await
        .map_err(ReadError::Io)?;
    let common = CommonHeader::parse(&header).map_err(|e| ReadError::Pdu(e, header.to_vec()))?;
    // plen was checked against PDU_MAX_BYTES before this allocation.
    let mut bytes = vec![0u8; common.plen as usize];
    bytes[..COMMON_HEADER_BYTES].copy_from_slice(&header);
    reader
        .read_exact(&mut bytes[COMMON_HEADER_BYTES..])
        .await
        .map_err(ReadError::Io)?;
    Pdu::decode(&bytes, digests).map_err(|e| {
        let hlen = usize::from(common.hlen).min(bytes.len());
        ReadError::Pdu(e, bytes[..hlen].to_vec())
    })
}

async fn terminate<W: AsyncWrite + Unpin>(
    writer: &mut W,
    error: &PduError,
    header: &[u8],
) -> std::io::Result<()> {
    let (fes, fei) = error.fes();
    let term = Pdu::TermReq {
        from_host: false,
        fes,
        fei,
        data: header.to_vec(),
    };
    writer.write_all(&term.encode(Digests::default(), 0)).await
}

impl Queue {
    async fn run<R: AsyncRead + Unpin>(&mut self, reader: &mut R, digests: Digests) -> Closed {
        let mut torn_down: Option<tokio::sync::watch::Receiver<Option<TeardownReason>>> = None;
        loop {
            let next = async {
                match &mut torn_down {
                    Some(watch) => {
                        tokio::select! {
                            pdu = read_pdu(reader, digests) => Ok(pdu),
                            reason = watch.wait_for(|r| r.is_some()) => {
                                Err(reason.ok().and_then(|r| *r).unwrap_or(TeardownReason::AdminQueueClosed))
                            }
                        }
                    }
                    None => Ok(read_pdu(reader, digests).await),
                }
            };
            let pdu = match next.await {
                Err(reason) => return Closed::TornDown(reason),
                Ok(Err(ReadError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Closed::ByHost
                }
                Ok(Err(ReadError::Io(e))) => return Closed::Io(e),
                Ok(Err(ReadError::Pdu(error, header))) => {
                    return self.fatal(error, header).await;
                }
                Ok(Ok(pdu)) => pdu,
            };
            let result = match pdu {
                Pdu::CapsuleCmd { sqe, data } => self.command(Sqe(sqe), data).await,
                Pdu::H2CData {
                    cccid,
                    ttag,
                    offset_bytes,
                    data,
                    last,
                } => self.h2c_data(cccid, ttag, offset_bytes, data, last),
                Pdu::TermReq {
                    from_host: true,
                    fes,
                    ..
                } => {
                    tracing::info!("host terminated the connection (status {fes})");
                    return Closed::ByHost;
                }
                other => Err((
                    pdu::fes::PDU_SEQUENCE_ERROR,
                    format!("unexpected PDU from the host: {other:?}"),
                )),
            };
            if let Err((fes, reason)) = result {
                let term = Pdu::TermReq {
                    from_host: false,
                    fes,
                    fei: 0,
                    data: Vec::new(),
                };
                let _ = self.out.send(term).await;
                return Closed::Protocol(reason);
            }
            if torn_down.is_none() {
                torn_down = self.controller.as_ref().map(|c| c.torn_down());
            }
        }
    }

    async fn fatal(&mut self, error: PduError, header: Vec<u8>) -> Closed {
        let (fes, fei) = error.fes();
        let term = Pdu::TermReq {
            from_host: false,
            fes,
            fei,
            data: header,
        };
        let _ = self.out.send(term).await;
        Closed::Protocol(error.to_string())
    }

    /// The SQ head after consuming one more entry.
    fn advance_sqhd(&mut self) -> u16 {
        if !self.sq_flow_control {
            return 0xffff;
        }
        assert!(self.sq_entries > 0, "a queue has entries");
        self.sqhd = (self.sqhd + 1) % self.sq_entries;
        self.sqhd
    }

    async fn respond(&self, sqe: &Sqe, sqhd: u16, completion: Completion) {
        let cqe = completion.encode(sqe.cid(), self.qid, sqhd);
        let _ = self.out.send(Pdu::CapsuleResp { cqe }).await;
    }

    async fn command(&mut self, sqe: Sqe, data: Vec<u8>) -> Result<(), (u16, String)> {
        let sqhd = self.advance_sqhd();
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err((
                pdu::fes::PDU_SEQUENCE_ERROR,
                format!("more than {} commands in flight", self.sq_entries),
            ));
        };
        if let Some(controller) = &self.controller {
            controller.touch();
        }
        let wants = sqe.sgl_length_bytes() as usize;
        if sqe.controller_to_host() && wants > TRANSFER_MAX_BYTES as usize {
            // Checked before anything sizes a buffer by the SGL length.
            self.respond(&sqe, sqhd, Status::SGL_INVALID_DATA_LENGTH.into())
                .await;
            return Ok(());
        }
        if sqe.host_to_controller() && wants > 0 {
            match sqe.sgl_type() {
                sgl::IN_CAPSULE => {
                    if data.len() != wants || wants > IN_CAPSULE_DATA_MAX_BYTES {
                        self.respond(&sqe, sqhd, Status::SGL_INVALID_DATA_LENGTH.into())
                            .await;
                        return Ok(());
                    }
                }
                sgl::TRANSPORT if data.is_empty() => {
                    if wants > TRANSFER_MAX_BYTES as usize {
                        self.respond(&sqe, sqhd, Status::SGL_INVALID_DATA_LENGTH.into())
                            .await;
                        return Ok(());
                    }
                    return self.request_data(sqe, sqhd, wants, permit).await;
                }
                _ => {
                    self.respond(&sqe, sqhd, Status::SGL_INVALID_TYPE.into())
                        .await;
                    return Ok(());
                }
            }
        } else if !data.is_empty() {
            return Err((
                pdu::fes::INVALID_HEADER_FIELD,
                "in-capsule data on a command that takes none".into(),
            ));
        }
        self.dispatch(sqe, sqhd, data, permit).await;
        Ok(())
    }

    /// Sends an R2T for the whole transfer (maxh2cdata is the transfer limit, so one
    /// R2T always suffices) and remembers the command until its data is in.
    async fn request_data(
        &mut self,
        sqe: Sqe,
        sqhd: u16,
        wants: usize,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), (u16, String)> {
        assert!(
            self.transfers.len() < QUEUE_ENTRIES_MAX as usize,
            "bounded by the permits"
        );
        let mut ttag = self.next_ttag;
        while self.transfers.contains_key(&ttag) {
            ttag = ttag.wrapping_add(1);
        }
        self.next_ttag = ttag.wrapping_add(1);
        self.transfers.insert(
            ttag,
            PendingTransfer {
                sqe,
                sqhd,
                data: Vec::with_capacity(wants),
                expected_bytes: wants,
                permit,
            },
        );
        let r2t = Pdu::R2T {
            cccid: sqe.cid(),
            ttag,
            offset_bytes: 0,
            length_bytes: wants as u32,
        };
        let _ = self.out.send(r2t).await;
        Ok(())
    }

    fn h2c_data(
        &mut self,
        cccid: u16,
        ttag: u16,
        offset_bytes: u32,
        data: Vec<u8>,
        last: bool,
    ) -> Result<(), (u16, String)> {
        let Some(transfer) = self.transfers.get_mut(&ttag) else {
            return Err((
                pdu::fes::INVALID_HEADER_FIELD,
                format!("H2CData for unknown transfer tag {ttag}"),
            ));
        };
        if transfer.sqe.cid() != cccid || offset_bytes as usize != transfer.data.len() {
            return Err((
                pdu::fes::INVALID_HEADER_FIELD,
                format!("H2CData cccid {cccid} offset {offset_bytes} out of order"),
            ));
        }
        if transfer.data.len() + data.len() > transfer.expected_bytes {
            return Err((
                pdu::fes::DATA_OUT_OF_RANGE,
                "H2CData past the requested length".into(),
            ));
        }
        transfer.data.extend_from_slice(&data);
        let complete = transfer.data.len() == transfer.expected_bytes;
        if complete != last {
            return Err((
                pdu::fes::INVALID_HEADER_FIELD,
                "H2CData LAST_PDU flag disagrees with the length".into(),
            ));
        }
        if complete {
            let transfer = self.transfers.remove(&ttag).expect("found above");
            self.spawn_command(transfer.sqe, transfer.sqhd, transfer.data, transfer.permit);
        }
        Ok(())
    }

    /// Runs a command whose data is complete: fabrics commands here (they change the
    /// queue's state), everything else in its own task.
    async fn dispatch(&mut self, sqe: Sqe, sqhd: u16, data: Vec<u8>, permit: OwnedSemaphorePermit) {
        if sqe.opcode() == FABRICS_OPCODE {
            let completion = self.fabrics(&sqe, &data);
            let sqhd = if self.sq_flow_control { sqhd } else { 0xffff };
            self.respond(&sqe, sqhd, completion).await;
            drop(permit);
            return;
        }
        self.spawn_command(sqe, sqhd, data, permit);
    }

    fn spawn_command(&self, sqe: Sqe, sqhd: u16, data: Vec<u8>, permit: OwnedSemaphorePermit) {
        let Some(controller) = self.controller.clone() else {
            let out = self.out.clone();
            let cqe = Completion::error(Status::COMMAND_SEQUENCE_ERROR).encode(sqe.cid(), 0, sqhd);
            tokio::spawn(async move {
                let _ = out.send(Pdu::CapsuleResp { cqe }).await;
                drop(permit);
            });
            return;
        };
        let target = self.target.clone();
        let out = self.out.clone();
        let qid = self.qid;
        tokio::spawn(async move {
            let outcome = if qid == 0 {
                admin::execute(&target, &controller, &sqe, &data).await
            } else {
                crate::io::execute(&target, &controller, &sqe, data).await
            };
            send_outcome(&out, &sqe, qid, sqhd, outcome).await;
            drop(permit);
        });
    }

    fn fabrics(&mut self, sqe: &Sqe, data: &[u8]) -> Completion {
        match sqe.fctype() {
            fctype::CONNECT => self.connect(sqe, data),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let Some(controller) = self.controller.as_ref().filter(|_| self.qid == 0) else {
                    return Completion::error(Status::COMMAND_SEQUENCE_ERROR);
                };
                let offset = sqe.u32_at(44);
                if sqe.fctype() == fctype::PROPERTY_GET {
                    match controller.property_get(offset) {
                        Some(value) => Completion {
                            dw0: value as u32,
                            dw1: (value >> 32) as u32,
                            status: Status::SUCCESS,
                        },
                        None => Completion::error(Status::INVALID_FIELD),
                    }
                } else {
                    let value = if offset == property::CAP {
                        sqe.u64_at(48)
                    } else {
                        u64::from(sqe.u32_at(48))
                    };
                    match controller.property_set(offset, value) {
                        Ok(()) => Completion::ok(0),
                        Err(status) => Completion::error(status),
                    }
                }
            }
            _ => Completion::error(Status::INVALID_OPCODE),
        }
    }

    /// Fabrics Connect (SQE: 40 recfmt, 42 qid, 44 sqsize, 46 cattr, 48 kato; data:
    /// 0 hostid[16], 16 cntlid, 256 subnqn, 512 hostnqn).
    fn connect(&mut self, sqe: &Sqe, data: &[u8]) -> Completion {
        if self.controller.is_some() {
            return Completion::error(Status::COMMAND_SEQUENCE_ERROR);
        }
        let invalid_sqe_field = |offset: u32| Completion {
            dw0: offset << 16,
            dw1: 0,
            status: Status::CONNECT_INVALID_PARAMETERS,
        };
        if sqe.u16_at(40) != 0 {
            return Completion::error(Status::CONNECT_INCOMPATIBLE_FORMAT);
        }
        if data.len() < CONNECT_DATA_BYTES {
            return Completion::error(Status::SGL_INVALID_DATA_LENGTH);
        }
        let qid = sqe.u16_at(42);
        let sqsize = sqe.u16_at(44);
        let cattr = sqe.0[46];
        let kato_ms = sqe.u32_at(48);
        if qid > IO_QUEUES_MAX {
            return invalid_sqe_field(42);
        }
        if sqsize == 0 || sqsize >= QUEUE_ENTRIES_MAX {
            return invalid_sqe_field(44);
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&data[0..16]);
        let subnqn = get_nul_padded(&data[256..512]);
        let hostnqn = get_nul_padded(&data[512..768]);
        let request = ConnectRequest {
            qid,
            kato_ms,
            hostid,
            cntlid: u16::from_le_bytes([data[16], data[17]]),
            subnqn: &subnqn,
            hostnqn: &hostnqn,
            listen_key: self.listen_key.clone(),
        };
        match self.target.connect(&request) {
            Ok(connected) => {
                let cntlid = connected.controller.cntlid;
                self.controller = Some(connected.controller);
                self.qid = qid;
                self.sq_entries = sqsize + 1;
                // The Connect itself was entry 0 of the new queue.
                self.sqhd = 1 % self.sq_entries;
                self.sq_flow_control = cattr & (1 << 2) == 0;
                tracing::debug!(
                    "{hostnqn} connected queue {qid} of controller {cntlid} of {subnqn}"
                );
                Completion::ok(u32::from(cntlid))
            }
            Err(refused) => {
                tracing::info!(
                    "Connect of {hostnqn} to {subnqn} queue {qid} refused: {:?}",
                    refused.status
                );
                Completion {
                    dw0: refused.dw0,
                    dw1: 0,
                    status: refused.status,
                }
            }
        }
    }
}

/// Sends a command's data (controller to host) and its completion.
async fn send_outcome(out: &mpsc::Sender<Pdu>, sqe: &Sqe, qid: u16, sqhd: u16, outcome: Outcome) {
    let mut completion = outcome.completion;
    if let Some(mut data) = outcome.data {
        if sqe.controller_to_host() && completion.status.is_success() {
            let limit = sqe.sgl_length_bytes() as usize;
            data.truncate(limit);
            if !data.is_empty() {
                assert!(
                    data.len() <= TRANSFER_MAX_BYTES as usize,
                    "one transfer at most"
                );
                let pdu = Pdu::C2HData {
                    cccid: sqe.cid(),
                    offset_bytes: 0,
                    data,
                    last: true,
                    success: false,
                };
                if out.send(pdu).await.is_err() {
                    return;
                }
            }
        } else if completion.status.is_success() {
            // Data for a command that takes none: a bug of ours, not the host's.
            tracing::error!("opcode {:#x} produced data it cannot return", sqe.opcode());
            completion = Completion::error(Status::INTERNAL_ERROR);
        }
    }
    let cqe = completion.encode(sqe.cid(), qid, sqhd);
    let _ = out.send(Pdu::CapsuleResp { cqe }).await;
}
