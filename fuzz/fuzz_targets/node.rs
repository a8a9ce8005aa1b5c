#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshd_node::fuzzing::node_input(data);
});
