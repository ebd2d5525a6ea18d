//! The OSD's etcd side: register `/osd/state/<n>` under a lease (only if absent), keep the
//! lease alive, load and watch the keys the OSD acts on, report `/osd/stats/<n>`, and carry
//! out the daemon's [`EtcdAction`]s in order.

use crate::cluster::PgKey;
use crate::daemon::EtcdAction;
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

pub use vitastor_proto::etcd::endpoints;

pub struct Etcd {
    pub client: Client,
    pub prefix: String,
    pub lease: i64,
}

impl Etcd {
    pub async fn connect(address: &str, prefix: &str, ttl: i64) -> Result<Etcd, String> {
        let endpoints = endpoints(address);
        let mut client = Client::connect(&endpoints, None)
            .await
            .map_err(|e| format!("cannot connect to etcd at {address}: {e}"))?;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| format!("cannot get an etcd lease: {e}"))?
            .id();
        Ok(Etcd {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            lease,
        })
    }

    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Creates `key` with `value` under our lease only if it does not exist.
    pub async fn create_leased(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        let response = self
            .client
            .txn(txn)
            .await
            .map_err(|e| format!("etcd txn on {key}: {e}"))?;
        Ok(response.succeeded())
    }

    /// Every key under the prefix and the revision to watch from.
    pub async fn load(&mut self) -> Result<(Vec<(String, Vec<u8>)>, i64), String> {
        let response = self
            .client
            .get(
                self.prefix.clone() + "/",
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("cannot read {}/ from etcd: {e}", self.prefix))?;
        let revision = response.header().map_or(0, |h| h.revision());
        let items = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&self.prefix)?.to_string();
                Some((key, kv.value().to_vec()))
            })
            .collect();
        Ok((items, revision))
    }

    pub async fn watch(
        &mut self,
        revision: i64,
    ) -> Result<(etcd_client::Watcher, etcd_client::WatchStream), String> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        self.client
            .watch(self.prefix.clone() + "/", Some(options))
            .await
            .map_err(|e| format!("cannot watch etcd: {e}"))
    }

    /// Writes `/pg/history` only if it still holds `expected` (compared as parsed JSON,
    /// `None` = absent) and our lease holds `/pg/state`: the primary that decided on the
    /// old history must not overwrite what the monitor or another primary wrote since.
    async fn put_history_if(
        &mut self,
        key: &str,
        state_key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, String> {
        use vitastor_proto::etcd::PgHistory;
        let current = self
            .client
            .get(key, None)
            .await
            .map_err(|e| format!("etcd get {key}: {e}"))?;
        let kv = current.kvs().first();
        let parse = |bytes: &[u8]| serde_json::from_slice::<PgHistory>(bytes).ok();
        let same = match (kv, expected) {
            (None, None) => true,
            (Some(kv), Some(expected)) => {
                let stored = parse(kv.value());
                stored.is_some() && stored == parse(expected.as_bytes())
            }
            _ => false,
        };
        if !same {
            return Ok(false);
        }
        let revision_matches = match kv {
            Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([
                revision_matches,
                Compare::lease(state_key, CompareOp::Equal, self.lease),
            ])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self
            .client
            .txn(txn)
            .await
            .map_err(|e| format!("etcd txn on {key}: {e}"))?;
        Ok(response.succeeded())
    }

    /// Carries out one action; a claim returns whether it succeeded.
    pub async fn execute(&mut self, action: &EtcdAction) -> Result<bool, String> {
        let pg_key = |base: &str, pg: &PgKey| format!("{}{base}{}/{}", self.prefix, pg.0, pg.1);
        let leased = Some(PutOptions::new().with_lease(self.lease));
        let result = match action {
            EtcdAction::ClaimPg { pg, value } => {
                let key = pg_key("/pg/state/", pg);
                return self.create_leased(&key, value).await;
            }
            EtcdAction::PutPgState { pg, value } => {
                let key = pg_key("/pg/state/", pg);
                self.client
                    .put(key, value.as_str(), leased)
                    .await
                    .map(|_| ())
            }
            EtcdAction::ReleasePg { pg } => {
                let key = pg_key("/pg/state/", pg);
                self.client.delete(key, None).await.map(|_| ())
            }
            EtcdAction::PutPgStats { pg, value } => {
                let key = pg_key("/pgstats/", pg);
                self.client.put(key, value.as_str(), None).await.map(|_| ())
            }
            EtcdAction::PutPgHistory {
                pg,
                expected,
                value,
            } => {
                let key = pg_key("/pg/history/", pg);
                let state_key = pg_key("/pg/state/", pg);
                return self
                    .put_history_if(&key, &state_key, expected.as_deref(), value)
                    .await;
            }
        };
        result
            .map(|()| true)
            .map_err(|e| format!("etcd write failed: {e}"))
    }
}
