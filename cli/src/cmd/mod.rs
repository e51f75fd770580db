//! One module per subcommand.

pub mod bench;
pub mod convert;
pub mod embed;
pub mod inspect;
pub mod session;
