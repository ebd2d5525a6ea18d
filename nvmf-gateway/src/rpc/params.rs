//! Typed access to a request's params; every failure names the field, as -32602 errors
//! must. Unknown keys are ignored: SPDK's client sends keys of its own version (`tgt_name`,
//! `io_unit_size`, `passthrough`...) that change nothing here.

use super::RpcError;
use serde_json::{Map, Value};

pub struct Params {
    map: Map<String, Value>,
    /// `outer.` for a nested object, so errors name the full path.
    prefix: String,
}

impl Params {
    /// Params must be an object or absent.
    pub fn new(params: Option<&Value>) -> Result<Params, RpcError> {
        match params {
            None | Some(Value::Null) => Ok(Params {
                map: Map::new(),
                prefix: String::new(),
            }),
            Some(Value::Object(map)) => Ok(Params {
                map: map.clone(),
                prefix: String::new(),
            }),
            Some(_) => Err(RpcError::invalid_params("params: must be an object")),
        }
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<String>, RpcError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RpcError::invalid_params(format!(
                "{}: must be a string",
                self.name(field)
            ))),
        }
    }

    pub fn str(&self, field: &str) -> Result<String, RpcError> {
        self.opt_str(field)?
            .ok_or_else(|| RpcError::invalid_params(format!("{}: missing", self.name(field))))
    }

    pub fn opt_str_list(&self, field: &str) -> Result<Option<Vec<String>>, RpcError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        RpcError::invalid_params(format!("{}: must be strings", self.name(field)))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(RpcError::invalid_params(format!(
                "{}: must be an array",
                self.name(field)
            ))),
        }
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, RpcError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(RpcError::invalid_params(format!(
                "{}: must be a boolean",
                self.name(field)
            ))),
        }
    }

    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, RpcError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "{}: must be a non-negative integer",
                    self.name(field)
                ))
            }),
        }
    }

    pub fn opt_u32(&self, field: &str) -> Result<Option<u32>, RpcError> {
        match self.opt_u64(field)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                RpcError::invalid_params(format!("{}: {n} is too large", self.name(field)))
            }),
        }
    }

    pub fn opt_u16(&self, field: &str) -> Result<Option<u16>, RpcError> {
        match self.opt_u64(field)? {
            None => Ok(None),
            Some(n) => u16::try_from(n).map(Some).map_err(|_| {
                RpcError::invalid_params(format!("{}: {n} is too large", self.name(field)))
            }),
        }
    }

    pub fn u32(&self, field: &str) -> Result<u32, RpcError> {
        self.opt_u32(field)?
            .ok_or_else(|| RpcError::invalid_params(format!("{}: missing", self.name(field))))
    }

    /// A nested object, with its field names prefixed by `field.` in errors.
    pub fn object(&self, field: &str) -> Result<Params, RpcError> {
        match self.get(field) {
            Some(Value::Object(map)) => Ok(Params {
                map: map.clone(),
                prefix: format!("{}.", self.name(field)),
            }),
            Some(_) => Err(RpcError::invalid_params(format!(
                "{}: must be an object",
                self.name(field)
            ))),
            None => Err(RpcError::invalid_params(format!(
                "{}: missing",
                self.name(field)
            ))),
        }
    }

    pub fn raw(&self) -> Value {
        Value::Object(self.map.clone())
    }
}
