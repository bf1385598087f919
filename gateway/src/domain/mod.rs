//! The domain: validated identifiers and the rules of the canonical record.

pub mod dates;
pub mod hurtigspor;
pub mod kommune;
pub mod national_id;
pub mod orgnr;
pub mod participant;
