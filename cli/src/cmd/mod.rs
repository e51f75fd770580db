//! One module per subcommand.

pub mod bench;
pub mod bench_llm;
pub mod convert;
pub mod embed;
pub mod generate;
pub mod inspect;
pub mod plan;
pub mod profile;
pub mod serve;
pub mod session;
