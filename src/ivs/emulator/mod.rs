//! TEMPORARY compile stand-in; replaced by the ivs branch.
use std::net::SocketAddr;
use std::path::PathBuf;
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub enforce_tps: bool,
    pub state_file: Option<PathBuf>,
}
impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            enforce_tps: true,
            state_file: None,
        }
    }
}
pub struct EmulatorHandle {
    pub addr: SocketAddr,
}
impl EmulatorHandle {
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn shutdown(&self) {}
}
pub async fn start(_c: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    unimplemented!()
}
pub async fn run_standalone(_c: EmulatorConfig) -> anyhow::Result<()> {
    unimplemented!()
}
