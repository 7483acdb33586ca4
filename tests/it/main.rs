//! Integration tests: the real binary and library against real loopback servers (the
//! simulator, a scripted Acquire stand-in, and a webhook receiver), never mocks.

mod support;

mod alerts;
mod check;
mod compare;
mod daemon;
mod deploy;
mod docs;
mod fetch;
mod insight;
mod kinds;
mod once;
mod ops;
mod render;
mod replicas;
mod simulator;
mod status;
