//! A small NVMe/TCP host: one queue per connection, one command at a time. The tests use
//! it to drive the target with exact PDUs (and to script faults); it is not a driver.

use crate::command::{fctype, sgl, Completion, Status, FABRICS_OPCODE};
use crate::pdu::{CommonHeader, Digests, Pdu, COMMON_HEADER_BYTES, SQE_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// In-capsule data the host sends at most (the target's IOCCSZ allows 8 KiB).
pub const HOST_IN_CAPSULE_MAX_BYTES: usize = 8192;

#[derive(Debug)]
pub enum HostError {
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for HostError {
    fn from(e: std::io::Error) -> HostError {
        HostError::Io(e)
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// A command to send: the SQE fields the tests set.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    pub opcode: u8,
    pub nsid: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    /// Data length for the SGL (either direction).
    pub data_len: u32,
}

impl Command {
    pub fn new(opcode: u8) -> Command {
        Command {
            opcode,
            nsid: 0,
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            data_len: 0,
        }
    }

    pub fn sqe(&self, cid: u16, in_capsule: bool) -> [u8; SQE_BYTES] {
        let mut sqe = [0u8; SQE_BYTES];
        sqe[0] = self.opcode;
        sqe[1] = 0x40; // PSDT: SGL
        sqe[2..4].copy_from_slice(&cid.to_le_bytes());
        sqe[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        sqe[32..36].copy_from_slice(&self.data_len.to_le_bytes());
        sqe[39] = if in_capsule {
            sgl::IN_CAPSULE
        } else {
            sgl::TRANSPORT
        };
        for (i, value) in [self.cdw10, self.cdw11, self.cdw12, self.cdw13]
            .into_iter()
            .enumerate()
        {
            sqe[40 + i * 4..44 + i * 4].copy_from_slice(&value.to_le_bytes());
        }
        sqe
    }
}

/// One host queue pair over one TCP connection.
pub struct HostQueue {
    stream: TcpStream,
    digests: Digests,
    next_cid: u16,
    pub qid: u16,
}

impl HostQueue {
    /// Connects and exchanges ICReq/ICResp asking for `digests`.
    pub async fn open(address: &str, digests: Digests) -> HostResult<HostQueue> {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let icreq = Pdu::IcReq {
            pfv: 0,
            hpda: 0,
            digests,
            maxr2t: 0,
        };
        stream
            .write_all(&icreq.encode(Digests::default(), 0))
            .await?;
        let mut queue = HostQueue {
            stream,
            digests: Digests::default(),
            next_cid: 1,
            qid: 0,
        };
        match queue.recv().await? {
            Pdu::IcResp { digests: got, .. } if got == digests => {}
            other => return Err(HostError::Protocol(format!("expected ICResp: {other:?}"))),
        }
        queue.digests = digests;
        Ok(queue)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> HostResult<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    pub async fn send(&mut self, pdu: &Pdu) -> HostResult<()> {
        let bytes = pdu.encode(self.digests, 0);
        self.send_raw(&bytes).await
    }

    pub async fn recv(&mut self) -> HostResult<Pdu> {
        let mut header = [0u8; COMMON_HEADER_BYTES];
        self.stream.read_exact(&mut header).await?;
        let common =
            CommonHeader::parse(&header).map_err(|e| HostError::Protocol(e.to_string()))?;
        let mut bytes = vec![0u8; common.plen as usize];
        bytes[..COMMON_HEADER_BYTES].copy_from_slice(&header);
        self.stream
            .read_exact(&mut bytes[COMMON_HEADER_BYTES..])
            .await?;
        Pdu::decode(&bytes, self.digests).map_err(|e| HostError::Protocol(e.to_string()))
    }

    /// Runs one command: host data in the capsule (up to 8 KiB) or after an R2T; returns
    /// the completion and the data the controller sent.
    pub async fn execute(
        &mut self,
        command: Command,
        data_out: Option<&[u8]>,
    ) -> HostResult<(Completion, Vec<u8>)> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let mut command = command;
        let in_capsule = data_out.is_some_and(|d| d.len() <= HOST_IN_CAPSULE_MAX_BYTES);
        if let Some(data) = data_out {
            command.data_len = data.len() as u32;
        }
        let capsule = Pdu::CapsuleCmd {
            sqe: command.sqe(cid, in_capsule),
            data: if in_capsule {
                data_out.unwrap_or_default().to_vec()
            } else {
                Vec::new()
            },
        };
        self.send(&capsule).await?;
        let mut data_in = Vec::new();
        loop {
            match self.recv().await? {
                Pdu::R2T {
                    cccid,
                    ttag,
                    offset_bytes,
                    length_bytes,
                } => {
                    let data = data_out.ok_or_else(|| {
                        HostError::Protocol("R2T for a command without data".into())
                    })?;
                    if cccid != cid {
                        return Err(HostError::Protocol(format!("R2T for cid {cccid}")));
                    }
                    let start = offset_bytes as usize;
                    let end = start + length_bytes as usize;
                    // Send in 64 KiB pieces, as a real host splits at maxh2cdata.
                    let mut at = start;
                    while at < end {
                        let piece = (end - at).min(65536);
                        let pdu = Pdu::H2CData {
                            cccid,
                            ttag,
                            offset_bytes: at as u32,
                            data: data[at..at + piece].to_vec(),
                            last: at + piece == end,
                        };
                        self.send(&pdu).await?;
                        at += piece;
                    }
                }
                Pdu::C2HData {
                    cccid,
                    offset_bytes,
                    data,
                    ..
                } => {
                    if cccid != cid || offset_bytes as usize != data_in.len() {
                        return Err(HostError::Protocol("C2HData out of order".into()));
                    }
                    data_in.extend_from_slice(&data);
                }
                Pdu::CapsuleResp { cqe } => {
                    let got = u16::from_le_bytes([cqe[12], cqe[13]]);
                    if got != cid {
                        return Err(HostError::Protocol(format!("CQE for cid {got}")));
                    }
                    let completion = Completion {
                        dw0: u32::from_le_bytes([cqe[0], cqe[1], cqe[2], cqe[3]]),
                        dw1: u32::from_le_bytes([cqe[4], cqe[5], cqe[6], cqe[7]]),
                        status: Status::from_field(u16::from_le_bytes([cqe[14], cqe[15]])),
                    };
                    return Ok((completion, data_in));
                }
                Pdu::TermReq { fes, .. } => {
                    return Err(HostError::Protocol(format!("terminated: status {fes}")))
                }
                other => return Err(HostError::Protocol(format!("unexpected {other:?}"))),
            }
        }
    }

    /// Fabrics Connect; returns the completion (dw0 = cntlid on success).
    pub async fn fabrics_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        kato_ms: u32,
    ) -> HostResult<Completion> {
        let mut data = vec![0u8; 1024];
        data[0..16].copy_from_slice(&[0x11; 16]);
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        crate::command::put_nul_padded(&mut data[256..512], subnqn);
        crate::command::put_nul_padded(&mut data[512..768], hostnqn);
        let mut command = Command::new(FABRICS_OPCODE);
        // Byte 4 (fctype) lives where nsid is; 42 qid, 44 sqsize, 48 kato.
        command.nsid = u32::from(fctype::CONNECT);
        command.cdw10 = u32::from(qid) << 16;
        command.cdw11 = u32::from(sqsize);
        command.cdw12 = kato_ms;
        let (completion, _) = self.execute(command, Some(&data)).await?;
        if completion.status.is_success() {
            self.qid = qid;
        }
        Ok(completion)
    }

    pub async fn property_get(&mut self, offset: u32) -> HostResult<Completion> {
        let mut command = Command::new(FABRICS_OPCODE);
        command.nsid = u32::from(fctype::PROPERTY_GET);
        command.cdw10 = 1; // 8 bytes
        command.cdw11 = offset;
        Ok(self.execute(command, None).await?.0)
    }

    pub async fn property_set(&mut self, offset: u32, value: u32) -> HostResult<Completion> {
        let mut command = Command::new(FABRICS_OPCODE);
        command.nsid = u32::from(fctype::PROPERTY_SET);
        command.cdw11 = offset;
        command.cdw12 = value;
        Ok(self.execute(command, None).await?.0)
    }
}

/// Connects a controller of `subnqn` as `hostnqn`: the admin queue (enabled) and one I/O
/// queue. The admin queue must be kept open while the I/O queue is used.
pub async fn connect_controller(
    address: &str,
    subnqn: &str,
    hostnqn: &str,
) -> HostResult<(HostQueue, HostQueue)> {
    let mut admin = HostQueue::open(address, Digests::default()).await?;
    let c = admin
        .fabrics_connect(0, 31, 0xffff, subnqn, hostnqn, 0)
        .await?;
    if !c.status.is_success() {
        return Err(HostError::Protocol(format!(
            "admin Connect: {:?}",
            c.status
        )));
    }
    let cntlid = c.dw0 as u16;
    let c = admin.property_set(0x14, 1).await?;
    if !c.status.is_success() {
        return Err(HostError::Protocol(format!("CC.EN: {:?}", c.status)));
    }
    let mut io = HostQueue::open(address, Digests::default()).await?;
    let c = io
        .fabrics_connect(1, QUEUE_SQSIZE, cntlid, subnqn, hostnqn, 0)
        .await?;
    if !c.status.is_success() {
        return Err(HostError::Protocol(format!("I/O Connect: {:?}", c.status)));
    }
    Ok((admin, io))
}

/// SQSIZE (0's based) of the I/O queues this host opens.
pub const QUEUE_SQSIZE: u16 = 127;

impl HostQueue {
    /// Keeps `depth` commands in flight until `deadline`: `next()` gives each command and
    /// its in-capsule write data (at most 8 KiB; reads bring their data in C2HData).
    /// Returns every command's latency; any error status fails the run.
    pub async fn run_depth(
        &mut self,
        depth: u16,
        deadline: std::time::Instant,
        mut next: impl FnMut() -> (Command, Option<Vec<u8>>),
    ) -> HostResult<Vec<std::time::Duration>> {
        assert!((1..=QUEUE_SQSIZE).contains(&depth), "depth fits the queue");
        let mut started = vec![None; usize::from(depth) + 1];
        let mut latencies = Vec::new();
        let mut in_flight = 0usize;
        for cid in 1..=depth {
            self.submit(cid, &mut next).await?;
            started[usize::from(cid)] = Some(std::time::Instant::now());
            in_flight += 1;
        }
        while in_flight > 0 {
            match self.recv().await? {
                Pdu::C2HData { .. } => {}
                Pdu::CapsuleResp { cqe } => {
                    let cid = u16::from_le_bytes([cqe[12], cqe[13]]);
                    let status = Status::from_field(u16::from_le_bytes([cqe[14], cqe[15]]));
                    if !status.is_success() {
                        return Err(HostError::Protocol(format!("cid {cid}: {status:?}")));
                    }
                    let Some(start) = started.get_mut(usize::from(cid)).and_then(Option::take)
                    else {
                        return Err(HostError::Protocol(format!("CQE for unknown cid {cid}")));
                    };
                    let now = std::time::Instant::now();
                    latencies.push(now - start);
                    if now < deadline {
                        self.submit(cid, &mut next).await?;
                        started[usize::from(cid)] = Some(std::time::Instant::now());
                    } else {
                        in_flight -= 1;
                    }
                }
                other => return Err(HostError::Protocol(format!("unexpected {other:?}"))),
            }
        }
        Ok(latencies)
    }

    async fn submit(
        &mut self,
        cid: u16,
        next: &mut impl FnMut() -> (Command, Option<Vec<u8>>),
    ) -> HostResult<()> {
        let (mut command, data) = next();
        if let Some(data) = &data {
            assert!(
                data.len() <= HOST_IN_CAPSULE_MAX_BYTES,
                "in-capsule data only"
            );
            command.data_len = data.len() as u32;
        }
        let capsule = Pdu::CapsuleCmd {
            sqe: command.sqe(cid, data.is_some()),
            data: data.unwrap_or_default(),
        };
        self.send(&capsule).await
    }
}
