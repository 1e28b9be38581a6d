//! gateway: a transparent egress gateway for LLM APIs.
//!
//! The data path, one module per stage (DESIGN §1): [`redirect`] (eBPF: connect() rewrite,
//! original destination, identity) → [`intercept`] (ClientHello, splice or inspect) →
//! [`provider`] → [`upstream`]. Shared services: [`config`], [`telemetry`]. [`app`] wires them.
// No unsafe code, except the prefilter's AVX2 kernel (policy::prefilter: behind a runtime CPU
// check, tested to agree with its scalar twin).
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod export;
pub mod hold;
pub mod http;
pub mod intercept;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod provider;
pub mod redirect;
pub mod request;
pub mod response;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod upstream;
pub mod vault;
pub mod web;
pub mod websocket;
pub mod workers;
