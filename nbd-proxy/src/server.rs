//! The NBD server for one export: newstyle-fixed negotiation (EXPORT_NAME, INFO, GO, LIST,
//! STRUCTURED_REPLY, meta contexts answered with none, ABORT), then the transmission phase
//! with many requests in flight: each request runs as its own task and replies are
//! written in completion order by one writer task.
//!
//! Bad input: a wrong magic, an option longer than 64 KiB or a request longer than
//! [`MAX_REQUEST`] ends the connection (its data cannot be trusted to be framed); requests
//! out of range get EINVAL (ENOSPC for writes past the end), writes to a read-only export
//! EPERM, unknown commands EINVAL.

use crate::protocol::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server exports. Errors are positive errnos.
pub trait Backend: Send + Sync + 'static {
    fn size(&self) -> u64;
    fn readonly(&self) -> bool;
    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Vec<u8>, i32>>;
    fn write(&self, offset: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), i32>>;
    fn flush(&self) -> BoxFuture<'_, Result<(), i32>>;
    fn write_zeroes(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<(), i32>>;
    fn trim(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<(), i32>>;
}

/// Longest option payload accepted during negotiation.
const MAX_OPTION: u32 = 64 << 10;
/// Requests executing at once per connection.
const MAX_IN_FLIGHT: usize = 256;

fn io_error(context: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Serves one client connection until it disconnects or breaks the protocol.
pub async fn serve_connection<S>(stream: S, backend: Arc<dyn Backend>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let Some(structured) = negotiate(&mut read, &mut write, backend.as_ref()).await? else {
        return Ok(());
    };
    transmission(read, write, backend, structured).await
}

/// Serves the transmission phase only (the kernel's ioctl interface skips negotiation and
/// uses simple replies).
pub async fn serve_transmission<S>(stream: S, backend: Arc<dyn Backend>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    transmission(read, write, backend, false).await
}

pub fn transmission_flags(backend: &dyn Backend) -> u16 {
    let mut flags = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES
        | TFLAG_CAN_MULTI_CONN;
    if backend.readonly() {
        flags |= TFLAG_READ_ONLY;
    }
    flags
}

/// The handshake. Returns whether structured replies were negotiated, or None when the
/// client ended the session (ABORT) before transmission.
async fn negotiate<R, W>(
    read: &mut R,
    write: &mut W,
    backend: &dyn Backend,
) -> Result<Option<bool>, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    write
        .write_all(&greeting)
        .await
        .map_err(io_error("greeting"))?;
    let client_flags = read.read_u32().await.map_err(io_error("client flags"))?;
    let no_zeroes = client_flags & CLIENT_FLAG_NO_ZEROES != 0;
    let mut structured = false;
    loop {
        let magic = read.read_u64().await.map_err(io_error("option"))?;
        if magic != IHAVEOPT {
            return Err(format!("bad option magic {magic:#x}"));
        }
        let option = read.read_u32().await.map_err(io_error("option"))?;
        let length = read.read_u32().await.map_err(io_error("option"))?;
        if length > MAX_OPTION {
            return Err(format!("option {option} is {length} bytes long; refusing"));
        }
        let mut data = vec![0u8; length as usize];
        read.read_exact(&mut data)
            .await
            .map_err(io_error("option data"))?;
        let flags = transmission_flags(backend);
        let reply = match option {
            OPT_EXPORT_NAME => {
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&backend.size().to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                write.write_all(&out).await.map_err(io_error("export"))?;
                return Ok(Some(false));
            }
            OPT_ABORT => {
                let _ = write.write_all(&option_reply(option, REP_ACK, &[])).await;
                return Ok(None);
            }
            OPT_LIST => {
                let mut out = option_reply(option, REP_SERVER, &[0, 0, 0, 0]);
                out.extend(option_reply(option, REP_ACK, &[]));
                out
            }
            OPT_STARTTLS => option_reply(option, REP_ERR_POLICY, b"TLS is not supported"),
            OPT_INFO | OPT_GO => match parse_info_request(&data) {
                Err(problem) => option_reply(option, REP_ERR_INVALID, problem.as_bytes()),
                Ok(()) => {
                    let mut export = Vec::with_capacity(12);
                    export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                    export.extend_from_slice(&backend.size().to_be_bytes());
                    export.extend_from_slice(&flags.to_be_bytes());
                    let mut block = Vec::with_capacity(14);
                    block.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                    block.extend_from_slice(&MIN_BLOCK.to_be_bytes());
                    block.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                    block.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                    let mut out = option_reply(option, REP_INFO, &export);
                    out.extend(option_reply(option, REP_INFO, &block));
                    out.extend(option_reply(option, REP_ACK, &[]));
                    if option == OPT_GO {
                        write.write_all(&out).await.map_err(io_error("go"))?;
                        return Ok(Some(structured));
                    }
                    out
                }
            },
            OPT_STRUCTURED_REPLY if length == 0 => {
                structured = true;
                option_reply(option, REP_ACK, &[])
            }
            OPT_STRUCTURED_REPLY => option_reply(option, REP_ERR_INVALID, b"no data expected"),
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT if structured => {
                // No metadata contexts (base:allocation) are offered: everything is data.
                option_reply(option, REP_ACK, &[])
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                option_reply(option, REP_ERR_INVALID, b"structured replies first")
            }
            _ => option_reply(option, REP_ERR_UNSUP, &[]),
        };
        write
            .write_all(&reply)
            .await
            .map_err(io_error("option reply"))?;
    }
}

/// `u32 name length, name, u16 count, count x u16` (any export name is this export).
fn parse_info_request(data: &[u8]) -> Result<(), String> {
    let name_len = data
        .get(0..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("truncated INFO/GO request")?;
    let rest = data
        .get(4 + name_len..)
        .ok_or("export name longer than the option")?;
    let count = rest
        .get(0..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or("truncated information request count")?;
    if rest.len() != 2 + 2 * count {
        return Err("information request list does not match its count".into());
    }
    Ok(())
}

async fn transmission<R, W>(
    mut read: R,
    mut write: W,
    backend: Arc<dyn Backend>,
    structured: bool,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(mut bytes) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                bytes.extend_from_slice(&more);
            }
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write.flush().await;
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let result = loop {
        let mut header = [0u8; RequestHeader::SIZE];
        match read.read_exact(&mut header).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(error) => break Err(format!("reading a request: {error}")),
        }
        let request = match RequestHeader::decode(&header) {
            Ok(request) => request,
            Err(problem) => break Err(problem),
        };
        if request.kind == CMD_DISC {
            break Ok(());
        }
        if request.length > MAX_REQUEST {
            break Err(format!(
                "request of {} bytes is over the {MAX_REQUEST} limit",
                request.length
            ));
        }
        let mut payload = Vec::new();
        if request.kind == CMD_WRITE {
            payload = vec![0u8; request.length as usize];
            if let Err(error) = read.read_exact(&mut payload).await {
                break Err(format!("reading write data: {error}"));
            }
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (backend, tx) = (backend.clone(), tx.clone());
        tasks.spawn(async move {
            let reply = execute(backend.as_ref(), request, payload, structured).await;
            let _ = tx.send(reply);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    };
    // Finish what is in flight (a disconnect waits for its writes), then close.
    while tasks.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
    result
}

async fn execute(
    backend: &dyn Backend,
    request: RequestHeader,
    payload: Vec<u8>,
    structured: bool,
) -> Vec<u8> {
    let end = request.offset.checked_add(u64::from(request.length));
    let in_range = end.is_some_and(|end| end <= backend.size());
    let modifies = matches!(request.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    let outcome: Result<Vec<u8>, u32> = if modifies && backend.readonly() {
        Err(EPERM)
    } else if matches!(
        request.kind,
        CMD_READ | CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES | CMD_CACHE
    ) && !in_range
    {
        Err(if modifies { ENOSPC } else { EINVAL })
    } else {
        let errno = |e: i32| nbd_errno(e);
        let fua = request.flags & CMD_FLAG_FUA != 0;
        match request.kind {
            CMD_READ => backend
                .read(request.offset, request.length)
                .await
                .map_err(errno),
            CMD_WRITE => match backend.write(request.offset, payload).await {
                Ok(()) if fua => backend.flush().await.map(|()| Vec::new()).map_err(errno),
                other => other.map(|()| Vec::new()).map_err(errno),
            },
            CMD_FLUSH => backend.flush().await.map(|()| Vec::new()).map_err(errno),
            CMD_TRIM => backend
                .trim(request.offset, request.length)
                .await
                .map(|()| Vec::new())
                .map_err(errno),
            CMD_WRITE_ZEROES => match backend.write_zeroes(request.offset, request.length).await {
                Ok(()) if fua => backend.flush().await.map(|()| Vec::new()).map_err(errno),
                other => other.map(|()| Vec::new()).map_err(errno),
            },
            CMD_CACHE => Ok(Vec::new()),
            _ => Err(EINVAL),
        }
    };
    match (outcome, structured) {
        (Ok(data), false) => simple_reply(request.cookie, 0, &data),
        (Err(error), false) => simple_reply(request.cookie, error, &[]),
        (Ok(data), true) if request.kind == CMD_READ && !data.is_empty() => structured_chunk(
            request.cookie,
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            &[&request.offset.to_be_bytes(), &data],
        ),
        (Ok(_), true) => structured_chunk(request.cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, &[]),
        (Err(error), true) => {
            let message = b"vitastor request failed";
            structured_chunk(
                request.cookie,
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                &[
                    &error.to_be_bytes(),
                    &(message.len() as u16).to_be_bytes(),
                    message,
                ],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol against an in-memory export over an in-process pipe: bad input gets an
    //! NBD error or closes only that connection, and the export is unchanged by it.

    use super::*;
    use std::sync::Mutex;
    use tokio::io::DuplexStream;

    struct Memory {
        data: Mutex<Vec<u8>>,
        readonly: bool,
    }

    impl Backend for Memory {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn readonly(&self) -> bool {
            self.readonly
        }
        fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Vec<u8>, i32>> {
            let data = self.data.lock().unwrap();
            let out = data[offset as usize..(offset + u64::from(len)) as usize].to_vec();
            Box::pin(async move { Ok(out) })
        }
        fn write(&self, offset: u64, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), i32>> {
            self.data.lock().unwrap()[offset as usize..offset as usize + bytes.len()]
                .copy_from_slice(&bytes);
            Box::pin(async { Ok(()) })
        }
        fn flush(&self) -> BoxFuture<'_, Result<(), i32>> {
            Box::pin(async { Ok(()) })
        }
        fn write_zeroes(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<(), i32>> {
            self.write(offset, vec![0; len as usize])
        }
        fn trim(&self, _offset: u64, _len: u32) -> BoxFuture<'_, Result<(), i32>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Starts a server on one end of a pipe; returns the client end and the export.
    fn serve(
        readonly: bool,
    ) -> (
        DuplexStream,
        Arc<Memory>,
        tokio::task::JoinHandle<Result<(), String>>,
    ) {
        let memory = Arc::new(Memory {
            data: Mutex::new(vec![7u8; 1 << 20]),
            readonly,
        });
        let (client, server) = tokio::io::duplex(1 << 22);
        let backend: Arc<dyn Backend> = memory.clone();
        let task = tokio::spawn(serve_connection(server, backend));
        (client, memory, task)
    }

    async fn option(stream: &mut DuplexStream, option: u32, data: &[u8]) {
        let mut out = IHAVEOPT.to_be_bytes().to_vec();
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        stream.write_all(&out).await.unwrap();
    }

    /// Reads option replies until ACK (or an error reply); returns their types.
    async fn replies(stream: &mut DuplexStream) -> Vec<u32> {
        let mut kinds = Vec::new();
        loop {
            assert_eq!(stream.read_u64().await.unwrap(), OPTION_REPLY_MAGIC);
            let _option = stream.read_u32().await.unwrap();
            let kind = stream.read_u32().await.unwrap();
            let len = stream.read_u32().await.unwrap();
            let mut data = vec![0; len as usize];
            stream.read_exact(&mut data).await.unwrap();
            kinds.push(kind);
            if kind == REP_ACK || kind & 0x8000_0000 != 0 {
                return kinds;
            }
        }
    }

    /// Greeting, structured replies, GO: ready for requests.
    async fn handshake(stream: &mut DuplexStream) {
        assert_eq!(stream.read_u64().await.unwrap(), NBDMAGIC);
        assert_eq!(stream.read_u64().await.unwrap(), IHAVEOPT);
        let _flags = stream.read_u16().await.unwrap();
        stream
            .write_u32(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES)
            .await
            .unwrap();
        option(stream, 99, &[]).await;
        assert_eq!(replies(stream).await, vec![REP_ERR_UNSUP]);
        option(stream, OPT_GO, &[0, 0, 0, 0, 0]).await;
        assert_eq!(replies(stream).await, vec![REP_ERR_INVALID], "truncated GO");
        option(stream, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(replies(stream).await, vec![REP_ACK]);
        option(stream, OPT_GO, &[0, 0, 0, 0, 0, 0]).await;
        assert_eq!(replies(stream).await, vec![REP_INFO, REP_INFO, REP_ACK]);
    }

    async fn request(
        stream: &mut DuplexStream,
        kind: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        data: &[u8],
    ) {
        let mut out = REQUEST_MAGIC.to_be_bytes().to_vec();
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(data);
        stream.write_all(&out).await.unwrap();
    }

    /// One structured chunk: (cookie, type, payload).
    async fn chunk(stream: &mut DuplexStream) -> (u64, u16, Vec<u8>) {
        assert_eq!(stream.read_u32().await.unwrap(), STRUCTURED_REPLY_MAGIC);
        let _flags = stream.read_u16().await.unwrap();
        let kind = stream.read_u16().await.unwrap();
        let cookie = stream.read_u64().await.unwrap();
        let len = stream.read_u32().await.unwrap();
        let mut payload = vec![0; len as usize];
        stream.read_exact(&mut payload).await.unwrap();
        (cookie, kind, payload)
    }

    #[tokio::test]
    async fn requests_errors_and_disconnect() {
        let (mut stream, memory, task) = serve(false);
        handshake(&mut stream).await;
        request(&mut stream, CMD_WRITE, 1, 4096, 4096, &[9u8; 4096]).await;
        assert_eq!(chunk(&mut stream).await, (1, REPLY_TYPE_NONE, vec![]));
        request(&mut stream, CMD_READ, 2, 4096, 8, &[]).await;
        let (cookie, kind, payload) = chunk(&mut stream).await;
        assert_eq!((cookie, kind), (2, REPLY_TYPE_OFFSET_DATA));
        assert_eq!(&payload[8..], &[9u8; 8]);
        // Out of range: EINVAL for reads, ENOSPC for writes, nothing written.
        request(&mut stream, CMD_READ, 3, 1 << 20, 4096, &[]).await;
        let (_, kind, payload) = chunk(&mut stream).await;
        assert_eq!(kind, REPLY_TYPE_ERROR);
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), EINVAL);
        request(
            &mut stream,
            CMD_WRITE,
            4,
            (1 << 20) - 4096,
            8192,
            &[1u8; 8192],
        )
        .await;
        let (_, _, payload) = chunk(&mut stream).await;
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), ENOSPC);
        assert_eq!(memory.data.lock().unwrap()[(1 << 20) - 1], 7);
        request(&mut stream, 77, 5, 0, 0, &[]).await;
        let (_, _, payload) = chunk(&mut stream).await;
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), EINVAL);
        request(&mut stream, CMD_DISC, 6, 0, 0, &[]).await;
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn read_only_export_refuses_writes() {
        let (mut stream, memory, _task) = serve(true);
        handshake(&mut stream).await;
        request(&mut stream, CMD_WRITE, 1, 0, 4096, &[1u8; 4096]).await;
        let (_, kind, payload) = chunk(&mut stream).await;
        assert_eq!(kind, REPLY_TYPE_ERROR);
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), EPERM);
        assert_eq!(memory.data.lock().unwrap()[0], 7);
    }

    #[tokio::test]
    async fn garbage_closes_only_that_connection() {
        let (mut stream, _, task) = serve(false);
        handshake(&mut stream).await;
        stream.write_all(&[0xAAu8; 28]).await.unwrap();
        assert!(task.await.unwrap().unwrap_err().contains("magic"));

        let (mut stream, _, task) = serve(false);
        handshake(&mut stream).await;
        request(&mut stream, CMD_WRITE, 1, 0, MAX_REQUEST + 1, &[]).await;
        assert!(task.await.unwrap().unwrap_err().contains("limit"));

        let (mut stream, _, task) = serve(false);
        let _ = stream.read_u64().await;
        let _ = stream.read_u64().await;
        let _ = stream.read_u16().await;
        stream.write_u32(CLIENT_FLAG_FIXED_NEWSTYLE).await.unwrap();
        let mut huge = IHAVEOPT.to_be_bytes().to_vec();
        huge.extend_from_slice(&OPT_GO.to_be_bytes());
        huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
        stream.write_all(&huge).await.unwrap();
        assert!(task.await.unwrap().unwrap_err().contains("refusing"));
    }
}
