//! stub
pub async fn run(_a: &crate::cli::HoldArgs) -> anyhow::Result<crate::report::Report> {
    todo!()
}
