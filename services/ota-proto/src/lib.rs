//! Generated protobuf types, tonic clients and servers for the `ota.v1`
//! services: the `.proto` files in `proto/` are the source of truth. The
//! one hand-written part is `states.rs`: the text names of the campaign and
//! action states and what each state means (final, a failure, reportable by
//! a vehicle), so every service classifies them the same way.

#[allow(clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("ota.v1");
}

mod states;

/// Encoded `FileDescriptorSet` of all `ota.v1` protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ota_descriptor.bin"));
