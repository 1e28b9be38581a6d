//! The TLS ClientHello reader (`intercept::hello::parse`), which decides whether a connection
//! is inspected or spliced. It never panics; it reads the same hello whatever prefix it is
//! shown first (a decision never changes as bytes arrive); and whatever rustls, a real TLS
//! server, accepts as a ClientHello, this reader reads with the same server name — a
//! disagreement could send an inspected provider's traffic down the splice path.
#![no_main]

use gateway::intercept::hello::{MAX_HELLO, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_HELLO)];
    let full = parse(data);
    if let Parsed::Hello(h) = &full {
        // A prefix is still incomplete, or already the same hello.
        for cut in [data.len() / 2, data.len().saturating_sub(1), data.len() / 3] {
            match parse(&data[..cut]) {
                Parsed::Incomplete => {}
                Parsed::Hello(p) => assert_eq!(&p, h, "prefix {cut} read another hello"),
                other => panic!("prefix {cut} of a hello read as {other:?}"),
            }
        }
    }
    let mut acc = rustls::server::Acceptor::default();
    let mut rd = data;
    while !rd.is_empty() {
        match acc.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Ok(Some(accepted)) = acc.accept() {
        let ch = accepted.client_hello();
        let sni = ch.server_name().map(str::to_string);
        match &full {
            Parsed::Hello(h) => assert_eq!(h.sni, sni, "rustls reads another server name"),
            // Refusing is always safe.
            Parsed::Malformed(_) => {}
            other => panic!("rustls accepts a hello (sni {sni:?}) that reads as {other:?}"),
        }
    }
});
