//! `gateway login`, `logout`, `whoami` (filled in below).
