#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| citadel_fuzz::transfer_request(data));
