//! Sans-IO SMTP: command-line framing, the command parser, ESMTP parameters, the DATA and BDAT
//! receivers, the reply writer, and the PROXY protocol header. Nothing here does I/O; everything
//! is fed bytes and tested alone.

pub mod bdat;
pub mod command;
pub mod data;
pub mod line;
pub mod params;
pub mod proxy;
pub mod reply;
