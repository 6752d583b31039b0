//! Sans-IO SMTP: the command parser, ESMTP parameters, the DATA and BDAT receivers, and the
//! PROXY protocol header. Nothing here does I/O; everything is fed bytes and tested alone.

pub mod bdat;
pub mod command;
pub mod data;
pub mod params;
pub mod proxy;
