//! Policy: what may leave for a provider (DESIGN §1, §6). Today: every credential the client
//! sent is removed ([`credentials`]); prompt scanning (mask / block / hold) joins here.

pub mod credentials;
pub mod detect;
pub mod prefilter;
pub mod scan;
