//! stub
use crate::error::Result;
use serde::{Deserialize, Serialize};
/// stub
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EssoState {
    n_steps: u64,
}
impl EssoState {
    /// Steps completed.
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }
}
/// stub
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EssoConfig {
    lr: f64,
}
impl EssoConfig {
    /// stub
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// stub
    pub fn build(&self) -> Result<crate::Sgd> {
        crate::SgdConfig::plain(self.lr).build()
    }
}
