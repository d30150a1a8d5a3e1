//! The admin virtual database (`psql "... user=admin dbname=admin"`): SQL-style admin
//! commands, plain-English commands and both wrapped in SQL comments, answered with real
//! result sets over the simple and extended protocols.

pub mod analytics;
pub mod command;
pub mod demo;
pub mod english;
pub mod exec;
pub mod session;
