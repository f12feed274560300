//! Integration tests: a real server on port 0 with a real SQLite file, driven through the
//! client SDK. One module per feature; `harness` starts and stops hubs.

mod access;
mod authz;
mod consume;
mod crash;
mod fuzz;
mod harness;
mod inspect;
mod keys;
mod limits;
mod publish;
mod redis;
mod reliability;
mod tls;
mod transparency;
mod validation;
