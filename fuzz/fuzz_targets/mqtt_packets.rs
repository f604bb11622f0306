#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::mqtt_packets(data));
