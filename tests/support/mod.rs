//! Test support shared by the integration tests: fakes and harnesses.
//! Other support modules are declared here.

#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod fake_oidc;
pub mod fake_slack;
pub mod oauth_harness;
