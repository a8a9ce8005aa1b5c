#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshd_controller::fuzzing::controller_input(data);
});
