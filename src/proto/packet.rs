//! codec: being written
