//! The entry point of the cargo-fuzz target `node` (feature `fuzzing`): what a node parses
//! from outside, fed arbitrary bytes. The first byte picks the parser: 0 the local API's
//! join request; 1 a bench request (peers send it over the mesh); 2 a bench datagram;
//! 3 `networks/<nwid>.json`; 4 `controllers.json`; 5 `replica-keys.json`; 6 the kernel's
//! route tables (`/proc/net/route`, `/proc/net/ipv6_route`). Nothing may panic.

use crate::daemon::api::JoinRequest;
use crate::daemon::bench::{parse_datagram, parse_request};
use crate::daemon::pins::ReplicaPins;
use crate::daemon::state::{LearnedControllers, NetworkRecord};

pub fn node_input(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => {
            let _ = serde_json::from_slice::<JoinRequest>(body);
        }
        1 => {
            let _ = parse_request(body);
        }
        2 => {
            let _ = parse_datagram(body);
        }
        3 => {
            let _ = serde_json::from_slice::<NetworkRecord>(body);
        }
        4 => {
            let _ = serde_json::from_slice::<LearnedControllers>(body);
        }
        5 => {
            let _ = serde_json::from_slice::<ReplicaPins>(body);
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let _ = crate::host_routes::parse_v4(&text);
            let _ = crate::host_routes::parse_v6(&text);
            let _ = crate::host_routes::default_gateway_v4(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parser_runs() {
        for selector in 0..7u8 {
            for body in [
                &b""[..],
                b"{}",
                br#"{"controller":"ctl:9994"}"#,
                b"\\xff\\x00",
            ] {
                let mut data = vec![selector];
                data.extend_from_slice(body);
                node_input(&data);
            }
        }
    }
}
