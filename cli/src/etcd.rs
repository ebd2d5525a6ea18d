//! The CLI's connection: the client library (cluster state, data operations) and guarded
//! etcd transactions for metadata changes.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use vitastor_client::state::ClientState;
use vitastor_client::{Client, ClientOptions};
use vitastor_proto::etcd::PoolConfig;
use vitastor_proto::PoolId;

pub struct Context {
    pub client: Client,
    pub json: bool,
}

impl Context {
    pub async fn connect(address: &str, prefix: &str, json: bool) -> Result<Context, String> {
        let mut options = ClientOptions::new(address);
        options.etcd_prefix = prefix.to_string();
        let client = Client::connect(options).await.map_err(|e| e.to_string())?;
        Ok(Context { client, json })
    }

    pub fn state(&self) -> ClientState {
        self.client.state()
    }

    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.client.etcd().1)
    }

    /// Runs a transaction; false when a condition failed.
    pub async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, String> {
        let (mut etcd, _) = self.client.etcd();
        let response = etcd
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        Ok(response.succeeded())
    }

    /// The current value and mod revision of a key (0 = absent).
    pub async fn get(&self, relative: &str) -> Result<(Option<Vec<u8>>, i64), String> {
        let (mut etcd, _) = self.client.etcd();
        let response = etcd
            .get(self.key(relative), None)
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        Ok(match response.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        })
    }

    pub fn unchanged(&self, relative: &str, revision: i64) -> Compare {
        Compare::mod_revision(self.key(relative), CompareOp::Equal, revision)
    }

    /// A pool by name or number.
    pub fn find_pool(
        &self,
        state: &ClientState,
        name_or_id: &str,
    ) -> Result<(u32, PoolConfig), String> {
        let pools = &state.view.pools;
        if let Some((id, pool)) = pools.iter().find(|(_, p)| p.name == name_or_id) {
            return Ok((id.get(), pool.clone()));
        }
        name_or_id
            .parse::<u32>()
            .ok()
            .and_then(|n| PoolId::new(n).ok())
            .and_then(|id| pools.get(&id).map(|p| (id.get(), p.clone())))
            .ok_or_else(|| format!("pool {name_or_id:?} does not exist"))
    }
}
