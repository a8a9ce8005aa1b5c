//! The TUN device of one network.
//!
//! Layer 3, no packet-information header, one queue, no offloads: every read is one IP
//! packet of at most the MTU, every write one packet. (Offloads with virtio-net headers and
//! multiqueue come later; DESIGN.md section 5.) The device is not persistent: closing the last
//! descriptor removes the link with its addresses and routes, so a crashed node leaves
//! nothing behind.

use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::EngineError;
use crate::plan::MAX_INTERFACE_NAME;

/// Creates the TUN `name` with `mtu` and brings it up. It must run inside a tokio runtime
/// (the device registers with its reactor), on a thread in the network namespace the device
/// belongs in.
pub fn open(name: &str, mtu: u16) -> Result<AsyncDevice, EngineError> {
    let fail = |source| EngineError::Tun {
        name: name.to_owned(),
        source,
    };
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface names have 1 to {MAX_INTERFACE_NAME} bytes"),
        )));
    }
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L3)
        .packet_information(false)
        .offload(false)
        .multi_queue(false)
        .mtu(mtu)
        .enable(true)
        .build_async()
        .map_err(fail)
}
