//! Compiles RocketMQ 5's gRPC messages (core/proto, written for rockfish from the public wire
//! facts) into Rust types with prost; protox parses them, so no protoc is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["apache/rocketmq/v2/service.proto"], ["proto"])
        .expect("core/proto parses");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("the gRPC messages compile");
}
