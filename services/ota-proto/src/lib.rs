//! Generated protobuf types, tonic clients and servers for the `ota.v1`
//! services. Nothing hand-written lives here: the `.proto` files in `proto/`
//! are the source of truth.

#[allow(clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("ota.v1");
}

/// Encoded `FileDescriptorSet` of all `ota.v1` protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ota_descriptor.bin"));
