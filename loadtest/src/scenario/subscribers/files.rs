//! The load tool's open-files limit: raised to what the scenario needs, or as far as allowed.

use serde::Serialize;

/// The process's open-files limit before and after raising it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FilesLimit {
    pub soft_before: u64,
    pub hard_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// Why the hard limit could not be raised to what the run wants, if it could not.
    pub hard_raise_error: Option<String>,
}

impl FilesLimit {
    pub(super) fn text(&self) -> String {
        let mut s = format!(
            "open files of this process (and the node it starts): soft {} -> {}, hard {} -> {}",
            self.soft_before, self.soft, self.hard_before, self.hard
        );
        if let Some(e) = &self.hard_raise_error {
            s += &format!(" ({e})");
        }
        s
    }
}

fn getrlimit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

fn setrlimit(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads only the struct passed by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raise the open-files hard limit to `want` if it is lower (needs CAP_SYS_RESOURCE; capped by
/// `fs.nr_open`), then the soft limit to the hard one. Started nodes inherit both.
pub fn raise_open_files(want: u64) -> std::io::Result<FilesLimit> {
    let (soft_before, hard_before) = getrlimit()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let mut hard_raise_error = None;
    let target = want.min(nr_open);
    if target > hard_before
        && let Err(e) = setrlimit(target, target)
    {
        hard_raise_error = Some(format!("raising the hard limit to {target}: {e}"));
    }
    let (soft, hard) = getrlimit()?;
    if soft < hard {
        setrlimit(hard, hard)?;
    }
    let (soft, hard) = getrlimit()?;
    Ok(FilesLimit {
        soft_before,
        hard_before,
        soft,
        hard,
        hard_raise_error,
    })
}
