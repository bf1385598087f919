//! Compiles the hurtigspor.v1 contract with protox (pure Rust, no `protoc`)
//! and generates prost messages plus tonic clients and servers from it.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "hurtigspor/v1/participant.proto",
    "hurtigspor/v1/participant_service.proto",
    "hurtigspor/v1/sync_service.proto",
    "hurtigspor/v1/audit_service.proto",
    "hurtigspor/v1/reporting_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in ["hurtigspor", "google", "build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("hurtigspor_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        // Messages with personal data get a masking Debug (src/lib.rs).
        .skip_debug([".hurtigspor.v1.Participant", ".hurtigspor.v1.LookupParticipantRequest"])
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
