//! stub
pub async fn run(_a: &crate::cli::ChurnArgs) -> anyhow::Result<crate::report::Report> {
    todo!()
}
