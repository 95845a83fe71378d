//! `--kdf-memory-mib` / `--kdf-iterations`: the Argon2id cost of a new key slot, set
//! explicitly on the command line (never by an environment variable), e.g. for small hosts.

use anyhow::Result;
use lifeboat_repo::keys::KdfParams;

const MIN_MIB: i64 = (KdfParams::MIN_MEMORY_KIB / 1024) as i64;
const MAX_MIB: i64 = (KdfParams::MAX_MEMORY_KIB / 1024) as i64;
const MIN_ITER: i64 = KdfParams::MIN_ITERATIONS as i64;
const MAX_ITER: i64 = KdfParams::MAX_ITERATIONS as i64;

/// KDF options of commands that create a key slot (`init`, `key add`, `key passwd`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KdfArgs {
    /// Argon2id memory for the new key slot in MiB (default 64, at least 8): lower it on
    /// low-memory hosts; every open of the repository needs this much RAM.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(MIN_MIB..=MAX_MIB))]
    kdf_memory_mib: Option<u32>,
    /// Argon2id passes for the new key slot (default 3, 1 to 64): more passes cost time,
    /// not memory.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(MIN_ITER..=MAX_ITER))]
    kdf_iterations: Option<u32>,
}

impl KdfArgs {
    /// The chosen cost, or `None` for the library's defaults when neither option is given.
    pub fn params(&self) -> Result<Option<KdfParams>> {
        if self.kdf_memory_mib.is_none() && self.kdf_iterations.is_none() {
            return Ok(None);
        }
        let default = KdfParams::default();
        let memory_kib = self
            .kdf_memory_mib
            .map_or(default.memory_kib, |mib| mib * 1024);
        let iterations = self.kdf_iterations.unwrap_or(default.iterations);
        Ok(Some(
            KdfParams::custom(memory_kib, iterations).map_err(anyhow::Error::msg)?,
        ))
    }
}
