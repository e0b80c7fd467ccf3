//! stub
pub async fn run(_a: &crate::cli::CrashArgs) -> anyhow::Result<crate::report::Report> {
    todo!()
}
