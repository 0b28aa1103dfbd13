//! keyguard-edge: see docs/edge.md and src/protocol.rs.
mod wire;

fn main() {
    std::process::exit(wire::run());
}
