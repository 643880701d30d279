//! Root URLs (s3://, gs://, az://, http://, memory://): a root or a clear error, and
//! never a password in what is shown.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|location: &str| {
    ckpt_storage::properties::check_root_url(location);
});
