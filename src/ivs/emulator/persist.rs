//! The optional state file: load at start, replace atomically (temp file + rename) after every
//! mutating call, so a restarted emulator finds its stages, keys and issued tokens again.

use std::path::Path;

use anyhow::Context;

use super::state::State;

/// The saved state, or an empty one if the file does not exist yet.
pub fn load(path: &Path) -> anyhow::Result<State> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write `state` next to `path` and rename over it: a crash leaves the old or the new file, never half.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(state)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivs::emulator::state::Stage;

    #[test]
    fn a_saved_state_loads_back_without_its_live_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ivs.json");
        assert!(
            load(&path).unwrap().stages.is_empty(),
            "a missing file is an empty emulator"
        );
        let mut state = State::default();
        let arn = "arn:aws:ivs:us-east-1:1:stage/abc".to_string();
        let mut stage = Stage::new(arn.clone(), "s".into(), Default::default());
        stage.active = Some(Default::default());
        state.stages.insert("abc".into(), stage);
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.stages["abc"].arn, arn);
        assert!(loaded.stages["abc"].active.is_none());
    }
}
