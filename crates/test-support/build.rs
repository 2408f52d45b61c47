//! Generates the server side of KurrentDB's `Streams` gRPC service for the test
//! double (`src/kurrentdb/`). The `kurrentdb` client crate ships only client
//! stubs, so the double compiles the same `.proto` files (copied from that crate,
//! see `proto/kurrentdb/README.md`) with `protoc`: Debian's `protobuf-compiler`
//! and `libprotobuf-dev` (the well-known types), which `deploy/local/test.sh`
//! installs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kurrentdb");
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(["."])
        .compile_protos(&["proto/kurrentdb/streams.proto"], &["proto/kurrentdb"])?;
    Ok(())
}
