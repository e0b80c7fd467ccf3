//! Browser tests' shared parts: whether Chromium and tests/browser's npm packages are here (a
//! missing prerequisite skips the test, unless STAGEFLEET_BROWSER_TESTS is set, as `.ci/run`
//! does), and running one scenario of tests/browser/media.mjs to its JSON report.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

pub const HERE: &str = env!("CARGO_MANIFEST_DIR");

/// The browser and the harness's npm packages, or why the test cannot run.
pub fn prerequisites() -> Result<PathBuf, String> {
    let chromium =
        std::env::var_os("STAGEFLEET_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let sdk = sdk_dist();
    if !sdk.exists() {
        return Err(format!("no {}", sdk.display()));
    }
    Ok(chromium)
}

/// The npm package's build of the IVS Web Broadcast SDK (pinned in tests/browser/package.json).
pub fn sdk_dist() -> PathBuf {
    Path::new(HERE).join("tests/browser/node_modules/amazon-ivs-web-broadcast/dist")
}

/// Whether to run; panics when browser tests are required but cannot run.
pub fn browser_available(test: &str) -> bool {
    match prerequisites() {
        Ok(_) => true,
        Err(why) if std::env::var_os("STAGEFLEET_BROWSER_TESTS").is_some() => {
            panic!(
                "{test}: browser tests are required (STAGEFLEET_BROWSER_TESTS) but {why}: run `bash tests/browser/setup.sh`"
            )
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}; run `bash tests/browser/setup.sh` to run the browser tests");
            false
        }
    }
}

/// Where a scenario's screenshots and logs go (emptied first): target/browser-artifacts/<name>.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = Path::new(HERE).join("target/browser-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `media.mjs --scenario <scenario> <args>` to its end and returns its JSON line.
pub async fn run_scenario(scenario: &str, args: &[&str], artifacts: &Path, timeout: Duration) -> Value {
    Scenario::spawn(scenario, args, artifacts, timeout).report().await
}

/// A running scenario, for callers that act while it runs (e.g. kill a node once it says so).
pub struct Scenario {
    child: tokio::process::Child,
    timeout: Duration,
}

impl Scenario {
    pub fn spawn(scenario: &str, args: &[&str], artifacts: &Path, timeout: Duration) -> Scenario {
        let child = tokio::process::Command::new("node")
            .arg(Path::new(HERE).join("tests/browser/media.mjs"))
            .args(["--scenario", scenario])
            .args(args)
            .arg("--artifacts")
            .arg(artifacts)
            .args(["--timeout-ms", &timeout.as_millis().to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs tests/browser/media.mjs");
        Scenario { child, timeout }
    }

    /// Waits until the scenario has written `file` (or ended: then its report is in the panic).
    pub async fn wait_for_file(&mut self, file: &Path) -> String {
        loop {
            if let Ok(text) = std::fs::read_to_string(file)
                && text.ends_with('\n')
            {
                return text.trim().to_string();
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                use tokio::io::AsyncReadExt;
                let mut out = String::new();
                if let Some(mut stdout) = self.child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out).await;
                }
                panic!("the scenario ended before writing {}: {out}", file.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The scenario's one JSON line, once it has finished.
    pub async fn report(self) -> Value {
        let out = tokio::time::timeout(self.timeout + Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the harness finishes within its own deadline")
            .expect("the harness ran");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|_| panic!("the harness printed no report: {text:?}"))
    }
}
