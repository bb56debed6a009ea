#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| citadel_fuzz::scan_hdf5(data));
