#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bzt_fuzz::seal_asn1(data));
