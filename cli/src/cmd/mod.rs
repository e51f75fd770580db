//! One module per subcommand.

pub mod bench;
pub mod bench_llm;
pub mod convert;
pub mod embed;
pub mod generate;
mod generate_split;
pub mod inspect;
pub mod plan;
pub mod profile;
pub mod rerank;
pub mod serve;
pub mod serve_api;
pub mod session;

/// TLS to `server` (`host:port`) trusting the certificates in `ca`, verifying `name` or else the
/// host of `server`; `None` without `ca` (plain TCP).
pub fn split_tls(
    server: &str,
    ca: Option<&std::path::Path>,
    name: Option<&str>,
) -> anyhow::Result<Option<edgecut_server::TlsClient>> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let client = edgecut_server::TlsClient::for_server(ca, server, name);
    Ok(Some(client.map_err(anyhow::Error::msg)?))
}
