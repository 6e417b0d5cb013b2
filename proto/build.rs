//! Generates the tonic/prost code with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .bytes(".")
        // `sirms ctl --json` prints the admin API's replies as they are; `sirms ctl restore` reads
        // the directory a backup wrote.
        .type_attribute(".sirms.cluster.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Mail in transit between nodes is never printed.
        .field_attribute(".sirms.cluster.v1.SpoolCopy.message", "#[serde(skip)]")
        .field_attribute(".sirms.cluster.v1.ImportChunk.part", "#[serde(skip)]")
        .field_attribute(".sirms.cluster.v1.ImportUserFile.content", "#[serde(skip)]")
        // Greylisting's hashes are never printed either (and bytes have no serde form).
        .field_attribute(".sirms.cluster.v1.GreylistQuery.triplet", "#[serde(skip)]")
        .field_attribute(".sirms.cluster.v1.GreylistQuery.network", "#[serde(skip)]")
        .compile_protos(&["proto/store.proto", "proto/cluster.proto", "proto/etcd.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
