#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bzt_fuzz::envelope_header(data));
