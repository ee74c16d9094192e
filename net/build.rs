//! Generates the gRPC service of RocketMQ 5 (`apache.rocketmq.v2.MessagingService`) with tonic,
//! over the message types rockfish-core generated from the same protos.

fn main() {
    println!("cargo:rerun-if-changed=../core/proto");
    let fds = protox::compile(["apache/rocketmq/v2/service.proto"], ["../core/proto"])
        .expect("core/proto parses");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".apache.rocketmq.v2", "::rockfish_core::proxy::pb")
        .compile_fds(fds)
        .expect("the gRPC service compiles");
}
