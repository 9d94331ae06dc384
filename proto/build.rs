//! Compiles the gRPC contracts with a pure-Rust protobuf compiler, so a
//! build needs nothing outside cargo (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/herald/v1/seam.proto",
        "proto/herald/v1/journal.proto",
        "proto/herald/v1/raft.proto",
        "proto/herald/v1/registry.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
