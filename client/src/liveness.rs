//! Fast failover driven by the client: revoking the etcd lease of an OSD that is certainly
//! dead (its port refuses connections), so its PGs move now instead of after the lease
//! TTL. The client is often the first to notice: it talks to primaries that may have no
//! busy peer connection. An OSD that merely does not answer PINGs is only dropped by the
//! client; its lease is revoked by its OSD peers (a client's own bad link must not take a
//! healthy OSD out of the cluster).
//!
//! Revoking is safe by construction: the lease revoked is the one read from
//! `/osd/state/<n>` together with an address equal to the one that failed. For a refusal,
//! the registration is read first and the port is connected again afterwards: an OSD binds
//! its port before it registers, so a refusal after the read proves that the instance
//! holding that lease is not listening. A restarted instance has a new lease.

use std::time::Duration;
use tokio::net::TcpStream;
use vitastor_proto::etcd::OsdState;

/// Splits `host:port` (the client's form of an OSD address).
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The lease of OSD `osd`'s registration if it still names `address`.
async fn registration_at(
    etcd: &mut etcd_client::Client,
    prefix: &str,
    osd: u64,
    address: &str,
) -> Result<Option<i64>, String> {
    let Some((host, port)) = split_address(address) else {
        return Ok(None);
    };
    let key = format!("{prefix}/osd/state/{osd}");
    let response = etcd
        .get(key.as_str(), None)
        .await
        .map_err(|e| format!("cannot read {key}: {e}"))?;
    let Some(kv) = response.kvs().first() else {
        return Ok(None);
    };
    let listens = serde_json::from_slice::<OsdState>(kv.value())
        .is_ok_and(|state| state.listens_at(host, port));
    Ok((listens && kv.lease() != 0).then_some(kv.lease()))
}

/// After a connection to OSD `osd` at `address` was refused: revokes its lease if its
/// registration still names that address and a fresh connect is refused too.
pub async fn revoke_if_refused(
    mut etcd: etcd_client::Client,
    prefix: &str,
    osd: u64,
    address: &str,
) -> bool {
    let result = async {
        let Some(lease) = registration_at(&mut etcd, prefix, osd, address).await? else {
            return Ok(false);
        };
        let again = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address));
        let refused = matches!(
            again.await,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if !refused {
            return Ok(false);
        }
        etcd.lease_revoke(lease)
            .await
            .map_err(|e| format!("cannot revoke lease {lease:x}: {e}"))?;
        Ok::<bool, String>(true)
    }
    .await;
    match result {
        Ok(true) => {
            tracing::warn!("OSD {osd} refused connections at {address}; revoked its lease");
            true
        }
        Ok(false) => false,
        Err(error) => {
            tracing::warn!(osd, "fast failure check: {error}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_address("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_address("::1:7000"), Some(("::1", 7000)));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address("h:notaport"), None);
    }
}
