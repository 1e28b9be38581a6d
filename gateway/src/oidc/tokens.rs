//! The signed-in user's tokens (filled in below).
