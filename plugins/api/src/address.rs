//! Parsing of SMTP paths (RFC 5321 §4.1.2), RFC 6531 for SMTPUTF8.

use crate::envelope::Address;

/// Why a path did not parse; the text goes into the 501/553 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub &'static str);

/// Parses a path `<...>` (reverse-path when `reverse`, forward-path otherwise).
pub fn parse_path(_input: &str, _reverse: bool, _smtputf8: bool) -> Result<Address, AddressError> {
    Err(AddressError("not implemented"))
}
