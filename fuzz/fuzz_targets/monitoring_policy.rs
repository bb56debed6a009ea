#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| citadel_fuzz::monitoring_policy(data));
