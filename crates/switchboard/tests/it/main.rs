//! Integration tests: a real server on port 0 with a real SQLite file, driven through the
//! client SDK. One module per feature; `harness` starts and stops hubs.

mod access;
mod authz;
mod consume;
mod crash;
mod harness;
mod inspect;
mod publish;
mod redis;
mod reliability;
mod transparency;
mod validation;
